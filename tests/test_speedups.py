"""Prefix sharing, chunked log-probs from hidden states, the fused SwiGLU and length grouping change speed and
memory, never results.

Each optimization alone and combined is compared with the plain path (2B padded rows, full logits) on the tiny
model in fp32, for each supported attention backend, on multi-turn prompts of random lengths with left and right
padding: per-sequence log-probs (elementwise), the loss, and the LoRA gradients must agree to 1e-5 relative.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from orpo_kit.config import ORPOConfig
from orpo_kit.data.formats import PreferencePair
from orpo_kit.data.tokenize import TokenizedPair, tokenize_pairs
from orpo_kit.forward import compute_pair_logps, supports_chunked_logps
from orpo_kit.fused_mlp import fuse_swiglu, unfuse_swiglu
from orpo_kit.layouts import PACKED, PLAIN, SHARED, choose_layout, layout_for, shared_attention_mask
from orpo_kit.logprobs import _is_frozen_linear
from orpo_kit.loss import orpo_loss
from orpo_kit.models import load_model, load_tokenizer
from orpo_kit.train import length_grouped

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sun",
    "moon",
    "river",
    "stone",
    "tree",
    "bird",
    "song",
    "light",
    "dark",
    "blue",
    "green",
    "red",
    "seven",
    "four",
]
REL = 1e-5


def _text(rng: random.Random, lo: int, hi: int) -> str:
    """A random sentence of lo..hi words."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def multi_turn_pairs(n: int, seed: int) -> list[PreferencePair]:
    """Dialogues of 1-3 user turns (earlier assistant turns between) with random-length answers."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        messages: list[dict[str, str]] = []
        for turn in range(rng.randint(1, 3)):
            if turn:
                messages.append({"role": "assistant", "content": _text(rng, 2, 12)})
            messages.append({"role": "user", "content": _text(rng, 2, 20)})
        pairs.append(PreferencePair(messages, _text(rng, 1, 25), _text(rng, 1, 25), origin=f"random row {i}"))
    return pairs


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny tokenizer shipped in the package."""
    return load_tokenizer(ORPOConfig())


@pytest.fixture(scope="module")
def items(tokenizer) -> list[TokenizedPair]:
    """Six tokenized multi-turn pairs of different lengths."""
    return tokenize_pairs(tokenizer, multi_turn_pairs(6, seed=3), max_length=512, max_prompt_length=256)


def lora_model(tokenizer, attn: str, use_lora: bool = True) -> torch.nn.Module:
    """The tiny Mistral with LoRA on every linear projection (or fully trainable), adapters perturbed from zero."""
    torch.manual_seed(0)
    cfg = ORPOConfig(use_lora=use_lora, attn_implementation=attn, lora_dropout=0.0)
    model = load_model(cfg, tokenizer)
    with torch.no_grad():  # LoRA B starts at zero: give the adapters a value so their gradients are not trivial
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model.train()


def run(
    model: torch.nn.Module,
    items: list[TokenizedPair],
    pad: int,
    shared: bool,
    chunked: bool,
    side: str,
    nll_tokens: str,
    packed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sequence log-probs, loss and LoRA gradients of one path."""
    model.zero_grad(set_to_none=True)
    layout = SHARED if shared else PACKED if packed else PLAIN
    batch = layout.collate(items, pad, padding_side=side)
    logps = compute_pair_logps(model, batch, nll_tokens, chunked=chunked, chunk_size=13)  # many small chunks
    loss, _ = orpo_loss(logps, orpo_lambda=0.5)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return torch.cat([logps.chosen_logps, logps.rejected_logps]).detach(), loss.detach(), grads


def assert_rel_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Elementwise relative closeness."""
    err = ((got - want).abs() / want.abs().clamp(min=1e-12)).max().item()
    assert err < REL, f"{what}: max relative error {err:.2e}"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("nll_tokens", ["response", "prompt_and_response"])
@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_every_optimization_alone_and_combined_is_exact(
    tokenizer, items, one_thread, attn: str, nll_tokens: str, adapter: str
) -> None:
    """LoRA: the frozen head takes FrozenHeadLogps; full fine-tuning: the checkpointed chunks (trainable head)."""
    model = lora_model(tokenizer, attn, use_lora=adapter == "lora")
    assert choose_layout(model) is SHARED and supports_chunked_logps(model)
    head = model.get_output_embeddings()
    assert _is_frozen_linear(head) == (adapter == "lora")
    pad = tokenizer.pad_token_id
    assert unfuse_swiglu(model) == 2  # the reference: the model's own MLP forward (load_model fuses by default)
    ref_logps, ref_loss, ref_grads = run(
        model, items, pad, shared=False, chunked=False, side="right", nll_tokens=nll_tokens
    )
    assert len(ref_grads) > 0 and all(g.abs().sum() > 0 for g in ref_grads.values())
    for fused, shared, chunked, side in itertools.product(
        (False, True), (False, True), (False, True), ("right", "left")
    ):
        if not (fused or shared or chunked) and side == "right":
            continue
        (fuse_swiglu if fused else unfuse_swiglu)(model)
        label = f"{attn} fused={fused} shared={shared} chunked={chunked} {side} padding, nll={nll_tokens}"
        logps, loss, grads = run(model, items, pad, shared, chunked, side, nll_tokens)
        assert_rel_close(logps, ref_logps, f"log-probs ({label})")
        assert_rel_close(loss[None], ref_loss[None], f"loss ({label})")
        for name, g in grads.items():
            err = ((g - ref_grads[name]).norm() / ref_grads[name].norm()).item()
            assert err < REL, f"gradient of {name} ({label}): relative L2 error {err:.2e}"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("nll_tokens", ["response", "prompt_and_response"])
@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_packed_layout_is_exact(tokenizer, items, one_thread, attn: str, nll_tokens: str, adapter: str) -> None:
    """One unpadded row, positions restarting per sequence, no mask: transformers keeps attention inside each
    sequence (here a block-causal mask on sdpa / eager; flash-attention's varlen kernels on GPU)."""
    model = lora_model(tokenizer, attn, use_lora=adapter == "lora")
    pad = tokenizer.pad_token_id
    unfuse_swiglu(model)  # the reference: plain rows, full logits, the model's own MLP forward
    ref_logps, ref_loss, ref_grads = run(
        model, items, pad, shared=False, chunked=False, side="right", nll_tokens=nll_tokens
    )
    for fused, chunked in itertools.product((False, True), (False, True)):
        (fuse_swiglu if fused else unfuse_swiglu)(model)
        label = f"{attn} packed fused={fused} chunked={chunked} nll={nll_tokens}"
        logps, loss, grads = run(model, items, pad, False, chunked, "right", nll_tokens, packed=True)
        assert_rel_close(logps, ref_logps, f"log-probs ({label})")
        assert_rel_close(loss[None], ref_loss[None], f"loss ({label})")
        for name, g in grads.items():
            err = ((g - ref_grads[name]).norm() / ref_grads[name].norm()).item()
            assert err < REL, f"gradient of {name} ({label}): relative L2 error {err:.2e}"


def test_packed_layout_has_no_padding_and_restarts_positions(items, tokenizer) -> None:
    plain, packed = PLAIN.collate(items, tokenizer.pad_token_id), PACKED.collate(items, tokenizer.pad_token_id)
    assert packed.input_ids.shape == (1, plain.num_tokens) and packed.num_tokens == plain.num_tokens
    assert packed.num_pairs == len(items) and "attention_mask" not in packed.model_inputs()
    first = len(items[0].prompt_ids) + len(items[0].chosen_ids)
    assert packed.position_ids[0, first - 1] == first - 1 and packed.position_ids[0, first] == 0
    real = plain.attention_mask.bool()
    assert torch.equal(packed.input_ids[0], plain.input_ids[real])  # the plain rows' tokens, in order


def test_layout_choice_follows_the_attention_backend(tokenizer) -> None:
    model = lora_model(tokenizer, "sdpa")
    assert choose_layout(model) is SHARED
    assert choose_layout(model, prefix_sharing=False) is PLAIN  # dense mask
    model.get_base_model().config._attn_implementation = "flash_attention_2"  # a label only: nothing runs here
    assert choose_layout(model) is PACKED
    assert choose_layout(model, packing=False) is PLAIN
    # the memory estimator asks the same rule by backend name
    assert [layout_for(b).name for b in ("sdpa", "eager", "flash_attention_2", "flex_attention")] == [
        "shared",
        "shared",
        "packed",
        "plain",
    ]


def test_rejected_never_sees_chosen_in_the_shared_layout(tokenizer, items, one_thread) -> None:
    """Changing the chosen answer moves chosen log-probs but leaves the rejected ones untouched."""
    model = lora_model(tokenizer, "sdpa").eval()
    pad = tokenizer.pad_token_id
    other = [TokenizedPair(t.prompt_ids, list(reversed(t.chosen_ids)), t.rejected_ids, t.origin) for t in items]
    with torch.no_grad():
        a = compute_pair_logps(model, SHARED.collate(items, pad), chunked=True)
        b = compute_pair_logps(model, SHARED.collate(other, pad), chunked=True)
    torch.testing.assert_close(a.rejected_logps, b.rejected_logps, rtol=1e-6, atol=1e-6)
    assert (a.chosen_logps - b.chosen_logps).abs().max() > 1e-3  # the probe itself can see a change


def test_shared_mask_is_causal_and_blocks_chosen_from_rejected() -> None:
    segments = torch.tensor([[1, 2, 2, 2]])  # one pad on the left, prompt 2, chosen 2, rejected 2
    allowed = shared_attention_mask(segments, 7, torch.float32)[0, 0] == 0
    want = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],  # pad: itself only
            [0, 1, 0, 0, 0, 0, 0],  # prompt
            [0, 1, 1, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0],  # chosen
            [0, 1, 1, 1, 1, 0, 0],
            [0, 1, 1, 0, 0, 1, 0],  # rejected: prompt and itself, never chosen
            [0, 1, 1, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, want)


def test_shared_layout_holds_each_prompt_once(items, tokenizer) -> None:
    plain, shared = PLAIN.collate(items, tokenizer.pad_token_id), SHARED.collate(items, tokenizer.pad_token_id)
    assert shared.num_pairs == plain.num_pairs == len(items)
    assert shared.num_tokens == plain.num_tokens  # the same logical tokens...
    prompts = sum(len(t.prompt_ids) for t in items)
    assert int(shared.attention_mask.sum()) == plain.num_tokens - prompts  # ...with every prompt held once
    assert shared.position_ids[0, len(items[0].prompt_ids) + len(items[0].chosen_ids)] == len(items[0].prompt_ids)


def test_length_grouping_keeps_every_pair_and_cuts_padding() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(10, 400) for _ in range(200)]
    order = list(range(200))
    rng.shuffle(order)
    grouped = length_grouped(order, lengths, batch_size=4)
    assert sorted(grouped) == list(range(200))

    def padding(o: list[int]) -> int:
        return sum(
            max(lengths[i] for i in o[k : k + 4]) * 4 - sum(lengths[i] for i in o[k : k + 4])
            for k in range(0, len(o), 4)
        )

    assert padding(grouped) < 0.2 * padding(order)


def test_trainer_trains_the_same_with_and_without_the_optimizations(tmp_path, one_thread) -> None:
    """Three optimizer steps on the tiny preset: every logged metric agrees between the two paths."""
    from orpo_kit.train import Trainer, read_metrics

    base = dict(
        max_steps=3,
        eval_steps=3,
        save_steps=3,
        max_train_pairs=24,
        max_eval_pairs=8,
        use_lora=True,
        learning_rate=1e-3,
        orpo_lambda=1.0,
        seed=5,
    )
    results = []
    for fast in (False, True):
        cfg = ORPOConfig(output_dir=str(tmp_path / f"fast-{fast}"), prefix_sharing=fast, chunked_logps=fast, **base)
        torch.manual_seed(0)
        Trainer(cfg).train()
        results.append(read_metrics(cfg.output_dir))
    for slow_rec, fast_rec in zip(*results, strict=True):
        for key, value in slow_rec.items():
            if key in ("step_time", "time") or not isinstance(value, float):
                continue
            assert fast_rec[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
