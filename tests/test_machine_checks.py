"""What notebooks 00 and 04 read from the machine (GPU, disk, token, gated models) and how 04 sizes a workshop run:
every check on fakes (no GPU, no network), the step budget and precision choice on plain numbers."""

from __future__ import annotations

import math
import types
from collections import namedtuple
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import errors

from orpo_kit import envcheck, workshop
from orpo_kit.config import resolve_config
from orpo_kit.envcheck import (
    HUB,
    OFFLINE_LIST,
    check_gated,
    check_gpu,
    check_hub_disk,
    check_hub_token,
    environment_checks,
    estimator_gpu_gib,
    recipe_checks,
)
from orpo_kit.workshop import (
    CARDS,
    estimate_seconds,
    format_duration,
    gpu_precision_overrides,
    precision_overrides,
    seconds_per_step,
    workshop_overrides,
    workshop_steps,
)

MISTRAL = "mistralai/Mistral-7B-v0.1"
Usage = namedtuple("Usage", "total used free")


def fake_gpu(monkeypatch, name: str, gib: float, bf16: bool) -> None:
    """torch.cuda answers as if one card of this name, size and bf16 support were present."""
    props = types.SimpleNamespace(name=name, total_memory=int(gib * 2**30))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def hub_error(cls: type[Exception]) -> Exception:
    """An instance of a hub error class without the HTTP response its constructor wants."""
    err = cls.__new__(cls)
    Exception.__init__(err, "fake hub error")
    return err


def recipe_shape():
    """The Mistral recipe with the sizes these tests count with, whatever the preset file says today."""
    sizes = dict(max_steps=3800, warmup_steps=400, per_device_train_batch_size=2, gradient_accumulation_steps=8)
    return resolve_config("mistral-7b-qlora").replace(max_length=1024, **sizes)


def raising(exc: BaseException):
    def fn(*args, **kwargs):
        raise exc

    return fn


# ---- GPU -----------------------------------------------------------------------------------------------------------
def test_gpu_without_bf16_reads_name_memory_and_asks_for_fp16(monkeypatch) -> None:
    fake_gpu(monkeypatch, "Tesla T4", 15.0, bf16=False)
    gpu = check_gpu()
    assert (gpu.status, gpu.name, gpu.bf16) == ("OK", "Tesla T4", False)
    assert gpu.total_gib == pytest.approx(15.0)
    assert "fp16" in gpu.message and "Tesla T4" in gpu.message


def test_gpu_with_bf16(monkeypatch) -> None:
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", 79.3, bf16=True)
    gpu = check_gpu()
    assert gpu.bf16 is True and "bf16 yes" in gpu.message and "fp16" not in gpu.message


def test_no_gpu_is_information_not_failure(monkeypatch) -> None:
    no_gpu(monkeypatch)
    gpu = check_gpu()
    assert (gpu.status, gpu.name, gpu.total_gib) == ("INFO", None, None)


def test_environment_checks_show_the_detected_card(monkeypatch, tmp_path) -> None:
    fake_gpu(monkeypatch, "Tesla T4", 15.0, bf16=False)
    lines = [message for _, message in environment_checks(tmp_path / "runs")]
    assert any("Tesla T4" in line and "15.0 GiB" in line for line in lines)


def test_estimator_memory_detected_chosen_or_default(monkeypatch) -> None:
    fake_gpu(monkeypatch, "Tesla T4", 14.6, bf16=False)
    assert estimator_gpu_gib(check_gpu())[0] == pytest.approx(14.6)
    assert estimator_gpu_gib(check_gpu(), chosen=40.0)[0] == 40.0
    no_gpu(monkeypatch)
    gib, why = estimator_gpu_gib(check_gpu())
    assert gib == envcheck.DEFAULT_GPU_GIB and "default" in why


def test_recipe_fit_follows_the_card(monkeypatch) -> None:
    fake_gpu(monkeypatch, "small card", 6.0, bf16=True)
    assert envcheck.check_recipe_fits("mistral-7b-qlora", check_gpu()).status == "FAIL"
    fake_gpu(monkeypatch, "big card", 80.0, bf16=True)
    assert envcheck.check_recipe_fits("mistral-7b-qlora", check_gpu()).status == "OK"


# ---- disk where the hub cache lives ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("free_gb", "status"),
    [(100, "OK"), (15, "WARN"), (10, "FAIL")],  # the download is 14.48 GB; 10% headroom makes 15.9 GB
)
def test_disk_against_the_mistral_download(monkeypatch, tmp_path, free_gb, status) -> None:
    monkeypatch.setattr(envcheck.shutil, "disk_usage", lambda path: Usage(10**12, 0, free_gb * 10**9))
    disk = check_hub_disk(MISTRAL, tmp_path / "hub")
    assert disk.status == status and disk.need_bytes == 14_483_498_040
    assert ("HF_HOME" in disk.message) == (status != "OK")


def test_disk_counts_what_is_already_cached(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(envcheck, "DOWNLOAD_BYTES", {"org/model": 1000})
    blobs = tmp_path / "hub" / "models--org--model" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "a").write_bytes(b"x" * 600)
    (blobs / "b.incomplete").write_bytes(b"x" * 300)  # a download in progress does not count
    monkeypatch.setattr(envcheck.shutil, "disk_usage", lambda path: Usage(10**6, 0, 500))
    disk = check_hub_disk("org/model", tmp_path / "hub")
    assert disk.need_bytes == 400 and disk.status == "OK"


def test_disk_of_a_cache_folder_not_made_yet_is_read_on_its_parent(monkeypatch, tmp_path) -> None:
    asked: list[Path] = []
    monkeypatch.setattr(envcheck.shutil, "disk_usage", lambda path: asked.append(Path(path)) or Usage(1, 0, 1))
    check_hub_disk(MISTRAL, tmp_path / "not" / "yet" / "hub")
    assert asked == [tmp_path]


def test_disk_of_an_unknown_model_says_so(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(envcheck.shutil, "disk_usage", lambda path: Usage(1, 0, 1))
    disk = check_hub_disk("someone/else", tmp_path)
    assert disk.status == "INFO" and disk.need_bytes is None


# ---- token and gated models ------------------------------------------------------------------------------------------
def test_token_missing(monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    token = check_hub_token()
    assert (token.status, token.token_set) == ("WARN", False)


def test_token_set_is_never_shown(monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_secret_value_123")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    token = check_hub_token()
    assert (token.status, token.token_set) == ("OK", True)
    assert "hf_secret" not in token.line() and "HF_TOKEN" in token.message


@pytest.mark.parametrize(
    "offline", [errors.OfflineModeIsEnabled("HF_HUB_OFFLINE=1"), errors.HTTPError("connection refused"), TimeoutError()]
)
def test_gated_offline_uses_the_known_list(monkeypatch, offline) -> None:
    monkeypatch.setattr(huggingface_hub, "model_info", raising(offline))
    monkeypatch.setattr(huggingface_hub, "auth_check", raising(AssertionError("no access check offline")))
    gated = check_gated(MISTRAL, token_set=False)
    assert (gated.status, gated.gated, gated.source) == ("FAIL", True, OFFLINE_LIST)
    assert "hf auth login" in gated.message and f"https://huggingface.co/{MISTRAL}" in gated.message
    with_token = check_gated(MISTRAL, token_set=True)
    assert (with_token.status, with_token.access) == ("WARN", None)
    assert check_gated("someone/public-model", token_set=False).status == "OK"


def test_gated_online_asks_the_hub(monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: types.SimpleNamespace(gated=False))
    gated = check_gated(MISTRAL, token_set=False)  # the hub's answer wins over the offline list
    assert (gated.status, gated.gated, gated.source) == ("OK", False, HUB)


def test_gated_online_with_access(monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: types.SimpleNamespace(gated="auto"))
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda *a, **k: None)
    gated = check_gated(MISTRAL, token_set=True)
    assert (gated.status, gated.access, gated.source) == ("OK", True, HUB)


def test_gated_online_without_access_yet(monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: types.SimpleNamespace(gated="auto"))
    monkeypatch.setattr(huggingface_hub, "auth_check", raising(hub_error(errors.GatedRepoError)))
    gated = check_gated(MISTRAL, token_set=True)
    assert (gated.status, gated.access) == ("FAIL", False) and "accept the conditions" in gated.message


def test_a_model_not_on_the_hub_fails(monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "model_info", raising(hub_error(errors.RepositoryNotFoundError)))
    gated = check_gated("mistralai/Mistral-7B-v0.01", token_set=True)
    assert gated.status == "FAIL" and "not on the hub" in gated.message


def test_recipe_checks_of_a_local_model_never_ask_the_hub(monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "model_info", raising(AssertionError("asked the hub")))
    monkeypatch.setattr(huggingface_hub, "get_token", raising(AssertionError("read the token")))
    checks = recipe_checks("smol")
    assert checks[-1].status == "OK" and "nothing to download" in checks[-1].message


def test_recipe_checks_of_the_mistral_recipe(monkeypatch, tmp_path) -> None:
    no_gpu(monkeypatch)
    monkeypatch.setattr(envcheck, "hub_cache_dir", lambda: tmp_path)
    monkeypatch.setattr(envcheck.shutil, "disk_usage", lambda path: Usage(1, 0, 100 * 10**9))
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "model_info", raising(errors.OfflineModeIsEnabled("offline")))
    statuses = [c.status for c in recipe_checks("mistral-7b-qlora")]
    assert statuses == ["INFO", "OK", "WARN", "FAIL"]  # fit (no GPU), disk, token, gated


# ---- workshop budget -------------------------------------------------------------------------------------------------
def test_workshop_steps_fill_the_minutes_left() -> None:
    # 20 min = 1200 s; 300 s spent leaves 900 s: 90 more steps of 10 s after the 8 done
    assert workshop_steps(20, 10.0, 300.0, steps_done=8, max_steps=3800) == 98
    assert workshop_steps(20, 10.0, 300.0, steps_done=8, max_steps=3800, reserve_s=100.0) == 88
    assert workshop_steps(20, 9.5, 300.0, steps_done=8, max_steps=3800) == 102  # 94.7 fit: floor, never over time


def test_workshop_steps_stay_within_the_recipe_and_move_on() -> None:
    assert workshop_steps(20, 1.0, 0.0, steps_done=5, max_steps=40) == 40  # never past the recipe's max_steps
    assert workshop_steps(20, 10.0, 1500.0, steps_done=8, max_steps=3800) == 9  # over time: one more step
    assert workshop_steps(20, 10.0, 0.0, steps_done=12, max_steps=12) == 12


@pytest.mark.parametrize(("minutes", "per_step"), [(0, 10.0), (20, 0.0), (-5, 1.0)])
def test_workshop_steps_refuse_nonsense(minutes, per_step) -> None:
    with pytest.raises(ValueError, match="WORKSHOP_MINUTES"):
        workshop_steps(minutes, per_step, 0.0, steps_done=1, max_steps=10)


def test_seconds_per_step_skips_warm_up_and_takes_the_median() -> None:
    records = [{"step": 0, "eval_loss": 1.0}, {"step": 1, "step_time": 60.0}]
    records += [{"step": s, "step_time": t} for s, t in zip(range(2, 7), (1.0, 2.0, 3.0, 100.0, 50.0), strict=True)]
    assert seconds_per_step(records, skip_first=1, count=4) == 2.5  # steps 2-5; step 6 is past the count
    with pytest.raises(ValueError, match="logging_steps=1"):
        seconds_per_step(records[:2])


def test_workshop_overrides_keep_the_warm_up_share() -> None:
    cfg = recipe_shape()
    changes = workshop_overrides(cfg, 20)
    shorter = cfg.replace(**changes, max_steps=80)
    assert shorter.warmup_steps == 0 and math.ceil(shorter.warmup_ratio * 80) == 9  # 400 of 3800 is 10.5%
    assert math.ceil(cfg.replace(**changes).warmup_ratio * 3800) == 400  # the full run keeps its warm-up
    assert workshop_overrides(cfg, None) == {}


# ---- precision ------------------------------------------------------------------------------------------------------
def test_precision_overrides() -> None:
    assert precision_overrides(False) == {"mixed_precision": "fp16", "bnb_4bit_compute_dtype": "float16"}
    assert precision_overrides(True) == {"mixed_precision": "bf16", "bnb_4bit_compute_dtype": "bfloat16"}
    t4 = next(c for c in CARDS if c.name == "T4")
    cfg = resolve_config("mistral-7b-qlora").replace(**precision_overrides(t4.bf16))
    assert (cfg.mixed_precision, cfg.bnb_4bit_compute_dtype) == ("fp16", "float16")


def test_gpu_precision_overrides_follow_the_card(monkeypatch) -> None:
    fake_gpu(monkeypatch, "Tesla T4", 15.0, bf16=False)
    assert gpu_precision_overrides("bf16")["mixed_precision"] == "fp16"
    assert gpu_precision_overrides("no") == {}  # a 32-bit config stays 32-bit
    no_gpu(monkeypatch)
    assert gpu_precision_overrides("bf16") == {}


# ---- time estimates -------------------------------------------------------------------------------------------------
def test_estimate_seconds_matches_the_formula() -> None:
    a100 = next(c for c in CARDS if c.name == "A100")
    params, tokens, eval_tokens = 7.0e9, 1.0e6, 2.0e6
    peak = 312e12 * workshop.QLORA_EFFICIENCY
    expected = tokens * 6 * params / peak + eval_tokens * 2 * params / peak
    assert estimate_seconds(a100, int(params), tokens, eval_tokens) == pytest.approx(expected)


def test_estimate_table_names_every_card_and_part() -> None:
    cfg = recipe_shape()
    parts = workshop.notebook_parts(cfg, interrupt_at=5, resume_steps=3, eval_pairs=64)
    table = workshop.estimate_table(cfg, parts, workshop_minutes=20)
    for name in ("T4", "A10", "L4", "RTX 4090", "A100", "full recipe (3800 steps)", "steps in 20 min"):
        assert name in table
    steps_row = next(line for line in table.splitlines() if line.startswith("steps in 20 min")).split()[4:]
    step_tokens = 16 * 2 * 1024  # 16 pairs per update, chosen and rejected rows at max_length
    flops_per_step = 6 * workshop.MISTRAL_7B_PARAMS * step_tokens
    expected = [round(20 * 60 * c.tflops * 1e12 * workshop.QLORA_EFFICIENCY / flops_per_step) for c in CARDS]
    assert [int(s) for s in steps_row] == expected
    assert expected[0] < expected[-1]  # T4 fits fewer steps than A100


def test_format_duration() -> None:
    assert [format_duration(s) for s in (30, 600, 7200)] == ["30 s", "10 min", "2.0 h"]
