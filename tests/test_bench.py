"""`orpo-kit bench`: workloads, token-id identity between orpo_kit and TRL, one tiny worker per trainer, reports.

The workers run in this process (`run_worker`), on the tiny model shape, so the file stays fast; the real
benchmark starts one process per run. The slow test runs the command line end to end on the tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest
import torch

from orpo_kit.bench import machine, plan, report, runners
from orpo_kit.bench.workloads import (
    BOS_ID,
    EOS_ID,
    MIXES,
    PAD_ID,
    VOCAB_SIZE,
    build_tokenizer,
    count_params,
    load_pairs,
    make_pairs,
    model_config,
    preference_pairs,
    save_model_dir,
    save_pairs,
    trl_rows,
)
from orpo_kit.data import tokenize_pairs

REQUIRED_KEYS = ("impl", "mix", "adapter", "pairs_per_s", "tokens_per_s", "peak_mem_gb", "loss_step0")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The tiny model + tokenizer and 8 tiny pairs (2 steps of 4), saved like the benchmark saves them."""
    root = tmp_path_factory.mktemp("bench")
    save_model_dir(root / "model", "tiny", seed=0)
    save_pairs(make_pairs(MIXES["tiny"], 8, seed=0), root / "pairs-tiny.json")
    return root


def _spec(workdir: Path, impl: str, adapter: str = "lora") -> dict:
    run_dir = workdir / "runs" / f"{impl}-{adapter}"
    return {
        "impl": impl,
        "mix": "tiny",
        "adapter": adapter,
        "repeat": 0,
        "device": "cpu",
        "threads": 1,
        "warmup": 1,
        "total_steps": 2,
        "model_dir": str(workdir / "model"),
        "pairs_path": str(workdir / "pairs-tiny.json"),
        "run_dir": str(run_dir),
        "result_path": str(run_dir / "result.json"),
    }


@pytest.fixture(scope="module")
def worker_records(workdir):
    """One LoRA run of TRL and of orpo_kit_trl_compat (1 warm-up + 1 timed step each), in this process."""
    threads = torch.get_num_threads()
    try:
        return {impl: runners.run_worker(_spec(workdir, impl)) for impl in ("trl", "orpo_kit_trl_compat")}
    finally:
        torch.set_num_threads(threads)


# ---- workloads -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mix", ["prompt_heavy", "uf_like"])
def test_pairs_have_the_promised_lengths_and_vocabulary(mix):
    m = MIXES[mix]
    pairs = make_pairs(m, 200, seed=0)
    completions = [len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs]
    for mean, lengths in ((m.prompt_tokens, [len(p.prompt_ids) for p in pairs]), (m.completion_tokens, completions)):
        assert min(lengths) >= round(0.8 * mean) and max(lengths) <= round(1.2 * mean)
        assert abs(sum(lengths) / len(lengths) - mean) < 0.05 * mean  # uniform around the mean
        assert max(lengths) - min(lengths) > 0.3 * mean  # and really spread
    for p in pairs:
        assert p.prompt_ids[0] == BOS_ID and p.chosen_ids[-1] == EOS_ID and p.rejected_ids[-1] == EOS_ID
        words = p.prompt_ids[1:] + p.chosen_ids[:-1] + p.rejected_ids[:-1]
        assert min(words) >= 4 and max(words) < VOCAB_SIZE  # no special token inside the text
    assert make_pairs(m, 5, seed=0) == pairs[:5]  # seeded: every worker sees the same pairs
    assert make_pairs(m, 5, seed=1) != pairs[:5]


def test_tokenizer_has_exactly_the_mistral_vocabulary(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE == model_config("cpu").vocab_size
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)


def test_orpo_kit_and_trl_style_tokenization_give_the_workload_ids(tokenizer, tmp_path):
    pairs = make_pairs(MIXES["tiny"], 6, seed=3)
    save_pairs(pairs, tmp_path / "pairs.json")
    assert load_pairs(tmp_path / "pairs.json") == pairs
    # orpo_kit: its own chat-template tokenization of the PreferencePairs
    ours = tokenize_pairs(tokenizer, preference_pairs(pairs), max_length=4096, max_prompt_length=4096)
    assert [(t.prompt_ids, t.chosen_ids, t.rejected_ids) for t in ours] == [
        (p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs
    ]
    # TRL's tokenize_row on standard rows: prompt without specials, answer = enc(prompt + answer) minus the
    # prompt, then bos before the prompt and eos after each answer
    for row, p in zip(trl_rows(pairs), pairs, strict=True):
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        for key, want in (("chosen", p.chosen_ids), ("rejected", p.rejected_ids)):
            full = tokenizer(row["prompt"] + row[key], add_special_tokens=False)["input_ids"]
            assert full[: len(prompt)] == prompt
            assert full[len(prompt) :] + [tokenizer.eos_token_id] == want
        assert [tokenizer.bos_token_id] + prompt == p.prompt_ids


def test_parameter_count_matches_the_model():
    from transformers import MistralForCausalLM

    config = model_config("tiny")
    counted = count_params(config)
    assert counted["total_params"] == sum(p.numel() for p in MistralForCausalLM(config).parameters())
    assert counted["flops_params"] == counted["total_params"] - counted["embedding_params"]  # untied lm_head
    # the CPU benchmark's random Mistral has 55M parameters
    assert 55e6 < count_params(model_config("cpu"))["total_params"] < 56e6
    assert 7.2e9 < count_params(model_config("mistral-7b"))["total_params"] < 7.3e9


# ---- the workers -----------------------------------------------------------------------------------------
def test_worker_records_have_the_required_keys(worker_records):
    for impl, rec in worker_records.items():
        for key in REQUIRED_KEYS:
            assert key in rec, f"{impl}: {key} missing"
        # every pair the run trained on was compared id by id with the workload's (a mismatch stops the run)
        assert rec["impl"] == impl and rec["token_ids_checked"] == plan.BATCH_PAIRS * 2
        assert rec["timed_pairs"] == plan.BATCH_PAIRS and len(rec["step_times_s"]) == 1
        assert rec["pairs_per_s"] > 0 and rec["tokens_per_s"] > rec["pairs_per_s"] and rec["peak_mem_gb"] > 0.1
        assert len(rec["losses"]) == 2 and all(torch.isfinite(torch.tensor(rec["losses"])))


def test_step0_loss_of_trl_compat_mode_equals_trl(worker_records):
    trl, ours = worker_records["trl"]["loss_step0"], worker_records["orpo_kit_trl_compat"]["loss_step0"]
    assert abs(trl - ours) <= 1e-5 * abs(trl), (trl, ours)


def test_both_trainers_train_the_same_lora_parameters(worker_records):
    counts = {rec["trainable_params"] for rec in worker_records.values()}
    assert len(counts) == 1 and counts.pop() > 0


# ---- reports --------------------------------------------------------------------------------------------
def _fake_run(impl, mix, repeat, pairs_per_s, peak, loss=2.0):
    return {
        "impl": impl,
        "mix": mix,
        "adapter": "lora",
        "repeat": repeat,
        "pairs_per_s": pairs_per_s,
        "tokens_per_s": 100 * pairs_per_s,
        "peak_mem_gb": peak,
        "loss_step0": loss,
        "step_times_s": [1.0],
        "trainable_params": 10,
        "worker_wall_s": 3.0,
    }


def test_aggregate_table_json_and_chart(tmp_path):
    runs = []
    for repeat in range(2):
        runs += [
            _fake_run("orpo_kit", "prompt_heavy", repeat, 2.0 + repeat, 1.0, loss=1.9),
            _fake_run("trl", "prompt_heavy", repeat, 1.0, 3.0),
            _fake_run("orpo_kit_trl_compat", "prompt_heavy", repeat, 2.0, 1.1, loss=2.0 + 1e-7),
        ]
    runs.append({"impl": "orpo_kit", "mix": "uf_like", "adapter": "lora", "repeat": 0, "error": "boom"})
    records = report.aggregate(runs, flops_params=1000, matmul_gflops=1.0)
    by_impl = {(r["impl"], r["mix"]): r for r in records}
    ok = by_impl[("orpo_kit", "prompt_heavy")]
    assert ok["pairs_per_s"] == pytest.approx(2.5) and ok["speedup_vs_trl"] == pytest.approx(2.5)
    assert ok["speedup_vs_trl_per_repeat"] == pytest.approx([2.0, 3.0])
    assert ok["mem_ratio_vs_trl"] == pytest.approx(1 / 3)
    assert ok["matmul_share"] == pytest.approx(4 * 1000 * 250 / 1e9)
    assert "error" in by_impl[("orpo_kit", "uf_like")]
    agreement = report.loss_agreement(records)
    assert agreement[0]["passed"] and agreement[0]["rel_diff"] == pytest.approx(5e-8, rel=1e-3)
    checks = report.acceptance(records, 100.0, "quick", agreement)
    assert {(c["check"], c["passed"]) for c in checks} >= {
        ("speed-up vs TRL (pairs/s)", True),
        ("peak memory vs TRL", True),
    }
    result = {
        "mode": "quick",
        "records": records,
        "loss_agreement": agreement,
        "acceptance": checks,
        "errors": ["boom"],
        "matmul": {"gflops_best": 1.0, "gflops_median": 0.9, "dtype": "float32", "n": 2048, "repeats": 3},
        "machine": {"gpu": None, "cpu": "test cpu", "torch_threads": 1},
    }
    table = report.format_table(result)
    assert "orpo_kit_trl_compat" in table and "failed" in table and "[PASS]" in table and "2.50" in table
    json.loads(json.dumps(result))  # JSON-ready
    png = report.plot_results(result, tmp_path / "bench.png")
    assert png.stat().st_size > 1000


def test_plan_alternates_implementations_and_repeats():
    quick = plan.build_plan("quick", "cpu")
    assert [(r["impl"], r["mix"], r["adapter"]) for r in quick] == [
        (i, m, "lora") for m in ("prompt_heavy", "uf_like") for i in ("orpo_kit", "trl", "orpo_kit_trl_compat")
    ]
    full = plan.build_plan("full", "cpu")
    assert {r["adapter"] for r in full} == {"lora", "full"} and {r["repeat"] for r in full} == {0, 1}
    first = [r for r in full if r["repeat"] == 0]
    assert full == first + [{**r, "repeat": 1} for r in first]  # A / B / A / B
    for (mix, adapter), names in plan.VARIANTS.items():
        assert set(names) <= {r["impl"] for r in full if (r["mix"], r["adapter"]) == (mix, adapter)}
    assert set(plan.VARIANT_IMPLS) == {n for names in plan.VARIANTS.values() for n in names}
    assert not set(plan.VARIANT_IMPLS) & {r["impl"] for r in full if r["adapter"] == "full"}
    with pytest.raises(ValueError, match="unknown"):
        plan.build_plan("quick", "cpu", impls=["nope"])


def test_cli_has_a_bench_command():
    from orpo_kit.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--json", "x.json"])
    assert args.command == "bench" and args.quick and args.json == "x.json"


@pytest.mark.slow
def test_bench_command_end_to_end_on_the_tiny_model(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orpo_kit.bench",
            "--quick",
            "--model-size",
            "tiny",
            "--mixes",
            "tiny",
            "--steps",
            "1",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {r["impl"] for r in result["records"]} == set(plan.MAIN_IMPLS)
    for rec in result["records"]:
        assert all(key in rec for key in REQUIRED_KEYS)
    assert result["loss_agreement"][0]["passed"]
    assert out.with_suffix(".png").is_file() and out.with_suffix(".txt").is_file()


def test_busy_warning_reads_current_use_not_the_load_average(monkeypatch):
    monkeypatch.setattr(machine, "_busy_cores", lambda seconds: 0.1 * (os.cpu_count() or 1))
    assert machine.busy_warning("cpu") is None
    monkeypatch.setattr(machine, "_busy_cores", lambda seconds: 0.9 * (os.cpu_count() or 1))
    assert "busy" in machine.busy_warning("cpu") and "cores busy over 1 s" in machine.busy_warning("cpu")
    assert machine.busy_warning("cuda") is None  # GPU timings do not depend on the CPU's other work
    busy = machine._busy_cores(0.2)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


def test_gpu_plan_adds_the_flash_packed_run_only_when_flash_attn_is_installed(monkeypatch):
    real = plan.importlib.util.find_spec
    monkeypatch.setattr(plan.importlib.util, "find_spec", lambda name: None if name == "flash_attn" else real(name))
    assert {r["impl"] for r in plan.build_plan("quick", "cuda")} == set(plan.MAIN_IMPLS)
    monkeypatch.setattr(plan.importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else real(name))
    assert {r["impl"] for r in plan.build_plan("quick", "cuda")} == {*plan.MAIN_IMPLS, "orpo_kit_flash_packed"}
    assert {r["impl"] for r in plan.build_plan("quick", "cpu")} == set(plan.MAIN_IMPLS)  # never on CPU
