"""LoRA on a base model whose vocabulary grew: only the new tokens' rows train, and nothing copies the whole
embedding or lm_head on their account.

The base model is built in the test: the tiny Mistral with three rows fewer than the shipped tokenizer, saved
to a folder with that tokenizer, so `load_model` grows its embeddings and peft wraps `embed_tokens` and
`lm_head` to train rows 1021-1023 (trainable tokens). Reading `.weight` on such a wrapper, or calling it,
builds a merged [V, H] copy (`TrainableTokensLayer.get_merged_weights`); the tests count those calls and
compare the log-probs and gradients with peft's own forward. The checkpoint tests check that the size of an
adapter checkpoint on disk is what `estimate_checkpoint_bytes` says (the new rows, and the whole embedding and
lm_head, whose grown rows were sampled at resize time), that saving never asks the hub about the base model,
and that the saved adapter loads back exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
from safetensors.torch import load_file

from orpo_kit import checkpoint as ckpt
from orpo_kit.config import resolve_config
from orpo_kit.forward import _float_dtype, compute_pair_logps
from orpo_kit.logprobs import head_token_logps, selected_token_logps
from orpo_kit.models.load import build_tiny_model, load_model, load_tokenizer
from orpo_kit.train import Trainer

NEW_ROWS = 3  # tokens the tokenizer has beyond the base model's vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base model folder: the tiny Mistral, its vocabulary NEW_ROWS short of the shipped tokenizer's."""
    folder = tmp_path_factory.mktemp("base")
    tokenizer = load_tokenizer(resolve_config("tiny"))
    build_tiny_model({"vocab_size": len(tokenizer) - NEW_ROWS}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _cfg(base: Path, tmp_path: Path, **overrides):
    return resolve_config(
        "tiny",
        overrides={
            "model_name_or_path": str(base),
            "use_lora": True,
            "lora_r": 32,  # adapters large enough that file headers are a small share of a checkpoint
            "lora_alpha": 64,
            "output_dir": str(tmp_path / "run"),
            **overrides,
        },
    )


def _model(cfg):
    """The run's model as the Trainer builds it (seeded: the grown rows start the same every time)."""
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg)
    return load_model(cfg, tokenizer), tokenizer


@pytest.fixture
def merged_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls to peft's full merged-weight builder, counted from now on."""
    calls: list[int] = []
    build = TrainableTokensLayer.get_merged_weights

    def counted(self, active_adapters):
        calls.append(self.base_layer.weight.shape[0])
        return build(self, active_adapters)

    monkeypatch.setattr(TrainableTokensLayer, "get_merged_weights", counted)
    return calls


def _batch(tokenizer):
    from orpo_kit.data import load_pairs, tokenize_pairs
    from orpo_kit.layouts import PLAIN

    pairs, _ = load_pairs("builtin")
    items = tokenize_pairs(tokenizer, pairs[:3], max_length=96, max_prompt_length=48)
    return PLAIN.collate(items, tokenizer.pad_token_id)


def test_the_model_has_trainable_new_rows(base_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = _model(_cfg(base_dir, tmp_path))
    inner = model.get_base_model()
    rows = list(range(len(tokenizer) - NEW_ROWS, len(tokenizer)))
    for module in (inner.model.embed_tokens, inner.lm_head):
        assert module.token_adapter.token_indices["default"] == rows


def test_activation_dtype_is_read_without_a_merged_copy(base_dir: Path, tmp_path: Path, merged_copies) -> None:
    model, _ = _model(_cfg(base_dir, tmp_path))
    assert _float_dtype(model) == torch.float32
    assert merged_copies == [], "reading the dtype built a merged copy of the embedding"


def test_head_with_trainable_rows_matches_peft_without_a_merged_copy(
    base_dir: Path, tmp_path: Path, merged_copies
) -> None:
    model, tokenizer = _model(_cfg(base_dir, tmp_path))
    head = model.get_base_model().lm_head
    delta = head.token_adapter.trainable_tokens_delta["default"]
    with torch.no_grad():
        delta.add_(torch.randn(delta.shape, generator=torch.Generator().manual_seed(1)))  # rows unlike the base
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, delta.shape[1], generator=gen, requires_grad=True)
    ids = torch.randint(0, len(tokenizer), (37,), generator=gen)
    ids[:6] = torch.tensor([1021, 1022, 1023, 1021, 7, 1023])  # new tokens among the targets
    weights = torch.linspace(-1.0, 2.0, 37)

    def run(path):
        hidden.grad, delta.grad = None, None
        logps, means = path()
        (weights * logps).sum().backward()
        return logps.detach(), means, hidden.grad.clone(), delta.grad.clone()

    ours = run(lambda: head_token_logps(head, hidden, ids, chunk_size=8))  # five chunks
    assert merged_copies == [], f"{len(merged_copies)} merged [V, H] copies built in the chunked head"
    reference = run(lambda: selected_token_logps(head(hidden), ids))  # peft's forward: one merged copy
    assert merged_copies, "the reference did not go through peft's merged weight"
    for got, want, what in zip(ours, reference, ("logps", "mean logits", "d/d hidden", "d/d new rows"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=what)
    assert (reference[3].abs().sum(dim=1) > 0).all()  # every new row got gradient


def test_chunked_step_matches_full_logits_and_copies_do_not_grow_with_chunks(
    base_dir: Path, tmp_path: Path, merged_copies
) -> None:
    cfg = _cfg(base_dir, tmp_path)
    model, tokenizer = _model(cfg)
    batch = _batch(tokenizer)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def step(**path) -> tuple[dict[str, torch.Tensor], int]:
        model.zero_grad(set_to_none=True)
        before = len(merged_copies)
        out = compute_pair_logps(model, batch, **path)
        loss = out.nll_loss - torch.nn.functional.logsigmoid(out.chosen_logps - out.rejected_logps).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainable.items()}
        return {"loss": loss.detach(), **grads}, len(merged_copies) - before

    full, _ = step(chunked=False)
    few, copies_few = step(chunked=True, chunk_size=4096)
    many, copies_many = step(chunked=True, chunk_size=8)
    assert copies_many == copies_few, f"merged copies grow with chunks: {copies_few} -> {copies_many}"
    assert copies_many <= 1  # peft's embedding lookup (freed at once); the one-row lm_head uses the stored layer
    for name, value in full.items():
        torch.testing.assert_close(few[name], value, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(many[name], value, rtol=1e-4, atol=1e-6, msg=name)


def _trained_checkpoint(base: Path, tmp_path: Path) -> tuple[Trainer, Path]:
    """One optimizer step on the grown-vocabulary model, then its checkpoint."""
    cfg = _cfg(base, tmp_path, max_steps=1, save_steps=1, eval_steps=1, max_eval_pairs=4, learning_rate=1e-2)
    trainer = Trainer(cfg)
    result = trainer.train()
    return trainer, result.last_checkpoint


def test_adapter_checkpoint_size_on_disk_is_the_estimate(base_dir: Path, tmp_path: Path) -> None:
    trainer, found = _trained_checkpoint(base_dir, tmp_path)
    model = trainer.accelerator.unwrap_model(trainer.model)
    on_disk = sum((found / name).stat().st_size for name in ("model/adapter_model.safetensors", "optimizer.pt"))
    estimate = ckpt.estimate_checkpoint_bytes(model)
    assert abs(estimate - on_disk) <= 0.03 * on_disk, f"estimate {estimate:,} B, on disk {on_disk:,} B"
    saved = load_file(found / "model" / "adapter_model.safetensors")
    rows = [k for k in saved if "trainable_tokens_delta" in k]
    assert len(rows) == 2 and all(saved[k].shape[0] == NEW_ROWS for k in rows), rows
    vocab = model.get_input_embeddings().weight.shape[0]
    whole = [k for k, v in saved.items() if v.ndim == 2 and v.shape[0] >= vocab]
    assert not whole, f"the whole embedding or lm_head was saved: {whole}"  # only the rows that train


def test_saving_an_adapter_never_asks_the_hub(base_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub
    import peft.utils.save_and_load as peft_saving

    model, tokenizer = _model(_cfg(base_dir, tmp_path))
    model.peft_config["default"].base_model_name_or_path = "some-org/some-base-model"  # a hub id, not a folder
    asked: list[str] = []

    def refuse(*args, **kwargs):
        asked.append(f"{args} {kwargs}")
        return False

    for module, name in (
        (peft_saving, "check_file_exists_on_hf_hub"),
        (peft_saving, "file_exists"),
        (peft_saving, "hf_hub_download"),
        (huggingface_hub, "file_exists"),
        (huggingface_hub, "hf_hub_download"),
    ):
        monkeypatch.setattr(module, name, refuse)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ckpt.save_checkpoint(tmp_path / "run", 1, model, tokenizer, optimizer, scheduler, {})
    assert asked == [], f"saving looked up the base model on the hub: {asked}"


def test_resume_loads_the_saved_adapter_exactly(base_dir: Path, tmp_path: Path) -> None:
    trainer, found = _trained_checkpoint(base_dir, tmp_path)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    fresh, tokenizer = _model(trainer.cfg)
    ckpt.load_weights(fresh, found)
    want = dict(trained.named_parameters())
    for name, p in fresh.named_parameters():
        torch.testing.assert_close(p, want[name], rtol=0, atol=0, msg=name)
    batch = _batch(tokenizer)
    with torch.no_grad():
        args = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        torch.testing.assert_close(fresh.eval()(**args).logits, trained.eval()(**args).logits, rtol=0, atol=0)


@pytest.mark.parametrize("chunked", [True, False])
def test_memory_estimate_counts_the_merged_copy_peft_builds(chunked: bool) -> None:
    from orpo_kit.memory import estimate_memory

    overrides = {"max_length": 512, "per_device_train_batch_size": 1, "chunked_logps": chunked}
    cfg = resolve_config("mistral-7b-qlora", overrides=overrides)
    grown, same = (estimate_memory(cfg, device="cuda", new_tokens=n) for n in (2, 0))
    copy = 32_064 * 4096 * 4  # [V, H] fp32: the embedding grown to a multiple of 64
    assert "merged" not in same.details["logits"]
    if chunked:  # the new rows train inside the frozen head's path: nothing recomputed, no merged copy
        assert "nothing recomputed" in grown.details["logits"] and "merged" not in grown.details["logits"]
        assert grown.logits - same.logits < copy / 4  # only the new rows' softmax columns
    else:  # the full-logits path keeps it for backward, and its gradient is [V, H] too
        assert "merged lm_head copy" in grown.details["logits"]
        assert grown.logits - same.logits >= 2 * copy
