"""Safe loading: pickled weights (model or adapter) refused unless allow_pickle_weights; a model's own Python code
never runs unless trust_remote_code. Each refusal is paired with the explicit opt-in working, so a refusal for
some other reason (a broken fixture) would show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers.dynamic_module_utils as dynamic_modules
import yaml
from safetensors.torch import load_file

from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.manifest import write_manifest
from orpo_kit.models import build_tiny_model
from orpo_kit.models.load import load_base_model
from orpo_kit.runs import load_run
from orpo_kit.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 256,
}
REMOTE_CODE = """
import os, pathlib
pathlib.Path(os.environ["ORPO_KIT_TEST_MARKER"]).write_text("the repository's code ran")
from transformers import MistralConfig, MistralForCausalLM
class CustomConfig(MistralConfig):
    model_type = "orpo-kit-test-custom"
class CustomModel(MistralForCausalLM):
    config_class = CustomConfig
"""


def _pickled_model_dir(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A model folder whose weights exist only as pytorch_model.bin (a pickle)."""
    model, folder = build_tiny_model(SMALL), tmp_path / "pickled"
    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder, model


def test_pickled_model_weights_are_refused_unless_allowed(tmp_path: Path) -> None:
    folder, original = _pickled_model_dir(tmp_path)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*allow_pickle_weights=true"):
        load_base_model(ORPOConfig(model_name_or_path=str(folder)))
    model, _ = load_base_model(ORPOConfig(model_name_or_path=str(folder), allow_pickle_weights=True))
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_pickled_adapter_in_a_run_is_refused_unless_allowed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = resolve_config(
        "tiny",
        overrides={
            "output_dir": str(run),
            "use_lora": True,
            "lora_r": 2,
            "max_steps": 1,
            "save_steps": 1,
            "eval_steps": 100,
            "max_eval_pairs": 1,
            "device": "cpu",
            "warmup_steps": 0,
        },
    )
    folder = Trainer(cfg).train().last_checkpoint / "model"
    expected = load_run(run).model.state_dict()  # from the safetensors adapter
    torch.save(load_file(folder / "adapter_model.safetensors"), folder / "adapter_model.bin")
    (folder / "adapter_model.safetensors").unlink()
    write_manifest(folder.parent)  # a checkpoint written this way (manifest included), not a damaged one
    with pytest.raises(ValueError, match=r"checkpoint weights are pickle files only \(adapter_model\.bin\)"):
        load_run(run)
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "allow_pickle_weights": True}))
    loaded = load_run(run).model.state_dict()
    lora_b = [k for k in loaded if "lora_B" in k]
    assert lora_b and all(bool(loaded[k].abs().sum() > 0) for k in lora_b), "the trained adapter was not loaded"
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in loaded)


def _remote_code_dir(tmp_path: Path) -> Path:
    """A model folder whose config.json asks transformers to import the folder's own custom.py."""
    folder = tmp_path / "remote"
    build_tiny_model(SMALL).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="orpo-kit-test-custom",
        auto_map={"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(REMOTE_CODE)
    return folder


def test_remote_code_never_runs_without_trust_remote_code(tmp_path: Path, monkeypatch) -> None:
    folder, marker = _remote_code_dir(tmp_path), tmp_path / "code-ran"
    monkeypatch.setenv("ORPO_KIT_TEST_MARKER", str(marker))
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # keep ~/.cache clean
    assert ORPOConfig().trust_remote_code is False
    with pytest.raises(ValueError, match="ships its own Python code.*trust_remote_code=true"):
        load_base_model(ORPOConfig(model_name_or_path=str(folder)))
    assert not marker.exists(), "the repository's code ran although trust_remote_code is off"
    model, _ = load_base_model(ORPOConfig(model_name_or_path=str(folder), trust_remote_code=True))
    assert type(model).__name__ == "CustomModel" and marker.exists()
