"""The GPU paths, checked on CPU with stand-ins: packed rows hand flash-attention their sequence boundaries, and
`orpo-kit bench` on a GPU checkpoints both trainers alike so its runs fit the card.

Packed rows: a fake varlen attention, registered in transformers under its own name and given the flash-attention
mask rule (no mask), attends inside the segments `cu_seq_lens_q` names, as flash-attention's varlen kernel does.
Bench: CUDA is reported available (torch.cuda.is_available), the command's plan is caught before any run starts,
and the package's memory estimator sizes the planned 7B runs.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest
import torch
import torch.nn.functional as F
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from orpo_kit.bench import command, plan, runners
from orpo_kit.bench.workloads import MIXES, make_pairs, model_config, save_model_dir, save_pairs
from orpo_kit.config import ORPOConfig
from orpo_kit.data.formats import PreferencePair
from orpo_kit.data.tokenize import TokenizedPair, tokenize_pairs
from orpo_kit.forward import compute_pair_logps
from orpo_kit.layouts import PACKED, PLAIN, SHARED
from orpo_kit.memory import GiB, estimate_memory
from orpo_kit.models import load_model, load_tokenizer

FLASH_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
FAKE_VARLEN = "fake_varlen_attention"


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny tokenizer shipped in the package."""
    return load_tokenizer(ORPOConfig())


@pytest.fixture(scope="module")
def items(tokenizer) -> list[TokenizedPair]:
    """Three pairs whose prompts and answers differ in length, so the packed segments differ too."""
    pairs = [
        PreferencePair([{"role": "user", "content": "the cat sat " * k}], "yes " * (k + 2), "no " * (3 * k), f"row {k}")
        for k in (1, 4, 2)
    ]
    return tokenize_pairs(tokenizer, pairs, max_length=512, max_prompt_length=256)


def segment_bounds(items: list[TokenizedPair]) -> list[int]:
    """Where each of the 2B packed sequences starts (chosen_0..B-1, rejected_0..B-1), and the row's end."""
    lengths = [len(p.prompt_ids) + len(p.chosen_ids) for p in items]
    lengths += [len(p.prompt_ids) + len(p.rejected_ids) for p in items]
    return [sum(lengths[:k]) for k in range(len(lengths) + 1)]


def longest_segment(bounds: list[int]) -> int:
    """The longest packed sequence."""
    return max(b - a for a, b in itertools.pairwise(bounds))


def fake_varlen_attention(calls: list[dict[str, Any]]):
    """Attention that sees only what flash-attention's varlen path sees: causal inside each `cu_seq_lens_q`
    segment (the whole row when no boundaries are given); records the flash kwargs of every call."""

    def attend(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        calls.append({k: kwargs.get(k) for k in FLASH_KWARGS} | {"mask": attention_mask})
        groups = query.shape[1] // key.shape[1]  # grouped-query attention: repeat the key / value heads
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
        cu = kwargs.get("cu_seq_lens_q")
        bounds = cu.tolist() if cu is not None else [0, query.shape[2]]
        parts = [
            F.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling
            )
            for a, b in itertools.pairwise(bounds)
        ]
        return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None

    return attend


def test_packed_rows_hand_flash_attention_the_segment_boundaries(tokenizer, items, one_thread, monkeypatch) -> None:
    """Every attention call gets int32 cumulative lengths at the packed sequences' starts and the longest length
    as a Python int; the log-probs attending by those boundaries equal the plain layout's."""
    torch.manual_seed(0)
    model = load_model(ORPOConfig(use_lora=False, attn_implementation="sdpa"), tokenizer).eval()
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        plain = compute_pair_logps(model, PLAIN.collate(items, pad))
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, FAKE_VARLEN, fake_varlen_attention(calls))
    monkeypatch.setitem(ALL_MASK_ATTENTION_FUNCTIONS, FAKE_VARLEN, flash_attention_mask)
    monkeypatch.setattr(model.config, "_attn_implementation", FAKE_VARLEN)
    with torch.no_grad():
        packed = compute_pair_logps(model, PACKED.collate(items, pad))
    bounds = segment_bounds(items)
    longest = longest_segment(bounds)
    assert len(calls) == model.config.num_hidden_layers
    for call in calls:
        assert call["mask"] is None
        for name in ("cu_seq_lens_q", "cu_seq_lens_k"):
            assert call[name] is not None, f"{name} was not passed to the attention"
            assert call[name].dtype == torch.int32 and call[name].tolist() == bounds
        assert (call["max_length_q"], call["max_length_k"]) == (longest, longest)
        assert type(call["max_length_q"]) is int  # flash-attention reads it on the host: no device sync
    torch.testing.assert_close(packed.chosen_logps, plain.chosen_logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.rejected_logps, plain.rejected_logps, rtol=1e-5, atol=1e-5)


def test_only_the_packed_layout_passes_flash_kwargs_and_they_follow_the_batch(items, tokenizer) -> None:
    """Padded layouts pass none; the packed layout's boundaries live on the batch's device (meta here: nothing is
    read back from it, so building the inputs costs no device sync)."""
    pad = tokenizer.pad_token_id
    for layout in (PLAIN, SHARED):
        assert not set(FLASH_KWARGS) & set(layout.collate(items, pad).model_inputs())
    inputs = PACKED.collate(items, pad).to("meta").model_inputs()
    assert inputs["cu_seq_lens_q"].device.type == "meta" and inputs["cu_seq_lens_q"].dtype == torch.int32
    assert inputs["cu_seq_lens_q"].shape == (2 * len(items) + 1,)
    assert inputs["max_length_q"] == longest_segment(segment_bounds(items))


# ---- orpo-kit bench on a GPU ----------------------------------------------------------------------------------------
CARD_GIB = {"len1024": 24, "len2048": 40}  # the card each GPU mix must fit (len2048: a 40 GiB card, so 80 GiB too)
CUDA_CONTEXT_GIB = 1.5  # not in the estimate: the CUDA context and the allocator's slack


class PlanCaught(Exception):
    """Raised in place of running the plan: carries what `orpo-kit bench` was about to run."""


def planned_runs(monkeypatch, tmp_path: Path, cuda: bool, *flags: str) -> tuple[str, list[dict[str, Any]]]:
    """The device and the runs `orpo-kit bench` plans when CUDA is (or is not) available; nothing is run."""

    def catch(plan_, workdir, device, *args):
        raise PlanCaught(device, plan_)

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([*flags, "--json", str(tmp_path / "bench.json"), "--workdir", str(tmp_path)])
    with monkeypatch.context() as patch, pytest.raises(PlanCaught) as caught:
        patch.setattr(torch.cuda, "is_available", lambda: cuda)  # only while the command plans
        patch.setattr(command, "_run_all", catch)
        command.run(args)
    return caught.value.args


def run_spec(item: dict[str, Any], device: str, workdir: Path) -> dict[str, Any]:
    """The worker spec of a planned run, as the command builds it."""
    run_dir = workdir / "runs" / f"{item['impl']}-{item['mix']}"
    return {
        **item,
        "device": device,
        "threads": 1,
        "warmup": 1,
        "total_steps": 2,
        "model_dir": str(workdir / "model"),
        "pairs_path": str(workdir / "pairs.json"),
        "run_dir": str(run_dir),
        "result_path": str(run_dir / "result.json"),
    }


def trl_checkpointing(spec: dict[str, Any]) -> tuple[bool, Any]:
    """TRL's resolved checkpointing setting for a run (its bf16 check needs a real GPU, so the args are built for
    the CPU: the checkpointing setting comes from the plan, not the device)."""
    args = runners._trl_args({**spec, "device": "cpu"})
    return bool(args.activation_checkpointing), args.activation_checkpointing_kwargs


def test_bench_on_a_gpu_checkpoints_both_trainers_and_on_cpu_neither(monkeypatch, tmp_path) -> None:
    """With CUDA available, every planned run (quick and full) checkpoints, orpo_kit's config and TRL's args
    alike; without it the CPU runs stay unchecked."""
    real = plan.importlib.util.find_spec  # flash-attn installed: its packed run is planned too
    monkeypatch.setattr(plan.importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else real(name))
    for flags in (["--quick"], []):
        device, runs = planned_runs(monkeypatch, tmp_path, True, *flags)
        assert device == "cuda" and "orpo_kit_flash_packed" in {r["impl"] for r in runs}
        for item in runs:
            assert item.get("gradient_checkpointing") is True, f"{item['impl']} {item['mix']}: no checkpointing"
            spec = run_spec(item, device, tmp_path)
            if plan.IMPLS[item["impl"]] is None:
                assert trl_checkpointing(spec) == (True, {"use_reentrant": False})
            else:
                assert runners._orpo_kit_config(spec).gradient_checkpointing
    device, runs = planned_runs(monkeypatch, tmp_path, False, "--quick")
    assert device == "cpu" and all(item.get("gradient_checkpointing") is False for item in runs)
    for item in runs:
        spec = run_spec(item, device, tmp_path)
        if plan.IMPLS[item["impl"]] is None:
            assert trl_checkpointing(spec) == (False, None)
        else:
            assert not runners._orpo_kit_config(spec).gradient_checkpointing


def test_planned_gpu_runs_fit_the_card_by_the_package_estimate(monkeypatch, tmp_path) -> None:
    """The 7B QLoRA runs at 4 pairs of each mix's longest rows: len1024 fits a 24 GiB card, len2048 a 40 GiB one.
    TRL is sized as the estimator's plain path (2 padded rows per pair, full logits, prompt tokens in the NLL)."""
    real = plan.importlib.util.find_spec
    monkeypatch.setattr(plan.importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else real(name))
    device, runs = planned_runs(monkeypatch, tmp_path, True)
    seven_b = model_config("mistral-7b")
    trl_path = dict(prefix_sharing=False, chunked_logps=False, nll_tokens="prompt_and_response")
    for item in runs:
        spec = run_spec(item, device, tmp_path)
        if plan.IMPLS[item["impl"]] is None:  # TRL: the plain path, with TRL's own checkpointing setting
            cfg = runners._orpo_kit_config({**spec, "impl": "orpo_kit"})
            cfg = cfg.replace(gradient_checkpointing=trl_checkpointing(spec)[0], **trl_path)
        else:
            cfg = runners._orpo_kit_config(spec)
        mix = MIXES[item["mix"]]
        prompt, completion = mix.bounds(mix.prompt_tokens)[1], mix.bounds(mix.completion_tokens)[1]
        est = estimate_memory(
            cfg,
            seven_b,
            batch_size=plan.BATCH_PAIRS,
            seq_len=prompt + completion,
            completion_fraction=completion / (prompt + completion),
            device="cuda",
            new_tokens=0,
        )
        need = est.total / GiB + CUDA_CONTEXT_GIB
        assert need < CARD_GIB[item["mix"]], f"{item['impl']} {item['mix']}: {need:.1f} GiB"


def test_workers_train_with_checkpointing_when_the_plan_asks(tmp_path, one_thread) -> None:
    """Both trainers really run checkpointed (read back from their models) and still agree on the step-0 loss."""
    save_model_dir(tmp_path / "model", "tiny", seed=0)
    save_pairs(make_pairs(MIXES["tiny"], 8, seed=0), tmp_path / "pairs.json")
    item = {"mix": "tiny", "adapter": "lora", "repeat": 0, "gradient_checkpointing": True}
    records = {
        impl: runners.run_worker(run_spec({**item, "impl": impl}, "cpu", tmp_path))
        for impl in ("trl", "orpo_kit_trl_compat")
    }
    assert all(r["activation_checkpointing"] for r in records.values()), "a trainer ran without checkpointing"
    trl, ours = records["trl"]["loss_step0"], records["orpo_kit_trl_compat"]["loss_step0"]
    assert abs(trl - ours) <= 1e-5 * abs(trl), (trl, ours)
