"""Ready-made `accelerate launch --config_file` files: ddp.yaml (the setup the two-process tests launch with
`--multi_gpu`; the file itself is only parsed by the tests), fsdp.yaml and deepspeed_zero{2,3}.yaml
(templates with their QLoRA caveats; `orpo-kit train` refuses sharded training for now)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def accelerate_config_names() -> list[str]:
    """Names of the shipped accelerate config files (without .yaml)."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def accelerate_config_path(name: str) -> Path:
    """Path of a shipped accelerate config, for `accelerate launch --config_file`."""
    path = Path(str(resources.files(__name__) / f"{name}.yaml"))
    if not path.is_file():
        raise ValueError(f"unknown accelerate config {name!r}; available: {', '.join(accelerate_config_names())}")
    return path
