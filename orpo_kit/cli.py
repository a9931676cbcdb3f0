"""The `orpo-kit` command line: a thin face over the package (every command is a plain function too)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_PRESET = "smol"


def _train_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `orpo-kit train`."""
    p = sub.add_parser(
        "train",
        help="train a model with ORPO",
        description="Train with ORPO. Later sources win: preset < --config < flags < KEY=VALUE. "
        "Values are converted to each key's type: learning_rate=3e-4, use_lora=true.",
    )
    p.add_argument(
        "--preset",
        help=f"a shipped recipe (see `orpo-kit presets`; default {DEFAULT_PRESET} when no --config is given)",
    )
    p.add_argument("--config", help="a YAML file of config keys")
    p.add_argument("--data", help='preference pairs: "builtin" or a .jsonl / .json file')
    p.add_argument("--eval-data", help="eval pairs (default: the data's eval split or a seeded held-out fraction)")
    p.add_argument("--output-dir", help="run directory (metrics.jsonl, config.yaml, checkpoints/)")
    p.add_argument("--max-steps", help="optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output dir")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output dir that holds a run: the old run is moved aside, not deleted",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any config key, e.g. orpo_lambda=0.5")


def _inspect_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `orpo-kit inspect-data`."""
    p = sub.add_parser(
        "inspect-data",
        help="validate preference data and print its report",
        description="Read, detect the format, validate, split and measure preference data.",
    )
    p.add_argument("source", metavar="PATH_OR_NAME", help='"builtin", a .jsonl/.json/.parquet/.csv file or a hub name')
    p.add_argument("--format", default="auto", help="auto | standard | conversational | implicit | mapped")
    p.add_argument("--split", help="split of a hub dataset (e.g. train_prefs)")
    p.add_argument(
        "--policy",
        default="default",
        help="default (drop bad rows; refuse a file that looks wrong as a "
        "whole) | raise (stop at the first) | drop (drop every bad row)",
    )
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.05,
        help="default policy: refuse a file with more malformed rows than this share (default 0.05)",
    )
    p.add_argument(
        "--tokenizer", default="tiny", help='tokenizer for token statistics ("tiny", a dir or hub name; "none" to skip)'
    )
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--max-prompt-length", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_inspect(args: argparse.Namespace) -> int:
    """Print the data report."""
    import json

    from .config import ORPOConfig
    from .data import inspect_data
    from .models import load_tokenizer

    tokenizer = None if args.tokenizer == "none" else load_tokenizer(ORPOConfig(model_name_or_path=args.tokenizer))
    found = inspect_data(
        args.source,
        tokenizer=tokenizer,
        format=args.format,
        split=args.split,
        policy=args.policy,
        max_length=args.max_length,
        max_prompt_length=args.max_prompt_length,
        max_bad_fraction=args.max_bad_fraction,
    )
    print(json.dumps(found.to_dict(), indent=2) if args.json else "\n".join(found.lines()))
    return 0


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    """Flags of `orpo-kit generate`."""
    p = sub.add_parser("generate", help="answers of a trained run, base and tuned side by side")
    p.add_argument("run_dir")
    p.add_argument("--prompt", action="append", help="a user prompt (repeatable; default: 5 eval prompts)")
    p.add_argument("--checkpoint", default="best", help="best (default), latest, or a checkpoint folder")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)


def run_generate(args: argparse.Namespace) -> int:
    """Print base vs tuned answers."""
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p {args.top_p:g}: must be in (0, 1]")
    if args.temperature < 0:
        raise ValueError(f"--temperature {args.temperature:g}: must be at least 0 (0 = greedy)")
    from .runs import load_run, side_by_side
    from .train import load_train_eval

    run = load_run(args.run_dir, args.checkpoint)
    prompts = args.prompt or [p.prompt_messages for p in load_train_eval(run.cfg)[1][:5]]
    rows = side_by_side(
        run, prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p
    )
    print(f"checkpoint: {run.checkpoint}")
    for row in rows:
        print(f"\n### {row['prompt']}\n--- base : {row['base']}\n--- tuned: {row['tuned']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate runs and print (and plot) the comparison."""
    import json

    from .runs import evaluate_run, results_table, skill_comparison_table

    results = [
        evaluate_run(
            d,
            args.checkpoint,
            args.max_pairs,
            not args.no_generate,
            include_base=i == 0,
            max_new_tokens=args.max_new_tokens,
        )
        for i, d in enumerate(args.run_dirs)
    ]
    print("\n".join(results_table(results)))
    for result in results:  # per skill with n and standard errors: per-skill n is often small
        print(f"\nrun {Path(result['run']).name}, " + "\n".join(skill_comparison_table(result)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from .viz.plots import plot_skill_comparison

        plot_skill_comparison(results, args.plot)
        print(f"plot saved to {args.plot}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check each checkpoint's files against its manifest; print one line per checkpoint."""
    from .checkpoint import BEST_FILE, CHECKPOINTS, best_checkpoint
    from .manifest import step_folders, verify_checkpoint

    root = Path(args.run_dir) / CHECKPOINTS
    folders = step_folders(root)
    if not folders:
        raise FileNotFoundError(f"no checkpoints in {root}")
    bad = 0
    for folder in reversed(folders):
        problems = verify_checkpoint(folder)
        bad += bool(problems)
        print(f"{folder.name}: " + ("DAMAGED: " + "; ".join(problems) if problems else "ok"))
    if (root / BEST_FILE).is_file() and best_checkpoint(args.run_dir) is None:
        bad += 1
        print(f"{BEST_FILE}: names a checkpoint that is not complete")
    print(
        f"{len(folders) - bad} of {len(folders)} checkpoints verify"
        if bad
        else f"all {len(folders)} checkpoints verify"
    )
    return 1 if bad else 0


def run_merge(args: argparse.Namespace) -> int:
    """Merge and say where the model went."""
    import torch

    from .runs import merge_run

    out = merge_run(
        args.run_dir, args.out_dir, args.checkpoint, dtype=getattr(torch, args.dtype), overwrite=args.overwrite
    )
    print(f"merged model saved to {out} (load with AutoModelForCausalLM.from_pretrained)")
    return 0


def _export_parser(sub: argparse._SubParsersAction) -> None:
    """Arguments of `orpo-kit export`."""
    x = sub.add_parser(
        "export",
        help="merged weights, GGUF for llama.cpp / Ollama / LM Studio, an Ollama Modelfile and a model card",
        description="Merge the run's adapter and write OUT_DIR: transformers weights, one GGUF file per --gguf type "
        "(llama.cpp's own converter, fetched once from PyPI), an Ollama Modelfile and README.md.",
    )
    x.add_argument("run_dir")
    x.add_argument("out_dir")
    x.add_argument(
        "--gguf",
        default="f16",
        help="GGUF types, comma-separated: f16 (default; exactly the merged float16 weights), q8_0 (half the size), "
        "bf16, f32",
    )
    x.add_argument("--checkpoint", default="best", help="best (default), latest, step-N, or a checkpoint folder")
    x.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR (moved aside, not deleted)")


def run_export(args: argparse.Namespace) -> int:
    """Export and say what was written and how to run it."""
    from .export import ConverterFailed, export_run

    types = [t.strip().lower() for t in args.gguf.split(",") if t.strip()]
    try:
        result = export_run(args.run_dir, args.out_dir, types, args.checkpoint, overwrite=args.overwrite)
    except ConverterFailed as exc:
        print(f"orpo-kit export: error: {exc}", file=sys.stderr)
        return 2
    for kind, path in result.gguf.items():
        print(f"GGUF {kind}: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    print(f"exported {result.checkpoint} to {result.folder}")
    print(f"  llama.cpp: llama-cli -m {next(iter(result.gguf.values()))} -cnv")
    print(f"  Ollama:    ollama create {result.folder.name} -f {result.folder / 'Modelfile'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command."""
    parser = argparse.ArgumentParser(prog="orpo-kit", description="ORPO preference optimization, explained and fast.")
    parser.add_argument("--version", action="version", version=f"orpo_kit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(sub)
    sub.add_parser("presets", help="list the shipped presets")
    _inspect_parser(sub)
    _generate_parser(sub)
    e = sub.add_parser("eval", help="held-out reward accuracy and generation checks per skill, base vs tuned")
    e.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    e.add_argument("--checkpoint", default="best")
    e.add_argument("--max-pairs", type=int, help="evaluate on the first N eval pairs")
    e.add_argument("--no-generate", action="store_true", help="skip the generation-based checks (faster)")
    e.add_argument("--max-new-tokens", type=int, default=48)
    e.add_argument("--plot", help="save a bar chart of the comparison to this PNG")
    e.add_argument("--json", help="also write the results to this JSON file")
    est = sub.add_parser(
        "estimate",
        help="estimate the memory an ORPO training run needs",
        description="Memory estimate (weights, adapters, optimizer, activations, logits).",
    )
    est.add_argument("--preset", help="a shipped recipe (default smol when no --config)")
    est.add_argument("--config", help="a YAML file of config keys")
    est.add_argument("--max-length", type=int, help="tokens per sequence (prompt + completion)")
    est.add_argument("--batch-size", type=int, help="pairs per device per micro-batch")
    est.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    _export_parser(sub)
    v = sub.add_parser("verify", help="check every checkpoint of a run against its manifest (exit 1 on a bad one)")
    v.add_argument("run_dir")
    m = sub.add_parser("merge", help="merge a LoRA run into full weights loadable by plain transformers")
    m.add_argument("run_dir")
    m.add_argument("out_dir")
    m.add_argument("--checkpoint", default="best", help="best (default), latest, or a checkpoint folder")
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    m.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty OUT_DIR (moved aside, not deleted)",
    )
    from .bench import add_arguments as add_bench_arguments  # stdlib-only import: cheap

    add_bench_arguments(
        sub.add_parser(
            "bench",
            help="benchmark orpo_kit against TRL's ORPOTrainer (speed, memory, step-0 loss)",
            description="Train the same model on the same pairs with orpo_kit and TRL's ORPOTrainer, each run in "
            "its own process (A / B / A / B); write JSON, a table and a bar chart.",
        )
    )
    return parser


def _version() -> str:
    """Installed package version."""
    from . import __version__

    return __version__


def run_train(args: argparse.Namespace) -> int:
    """Resolve the config, train, and print where everything went."""
    from .allocator import is_glibc, lean_heap_active
    from .config import ORPOConfig, parse_overrides, resolve_config
    from .train import CONFIG_FILE, METRICS_FILE, train

    flags = [
        f"{name}={getattr(args, name)}"
        for name in ("data", "eval_data", "output_dir", "max_steps")
        if getattr(args, name) is not None
    ]
    overrides = parse_overrides(flags + args.overrides)  # KEY=VALUE after the flags: it wins, as the README says
    preset, config_file = args.preset or (None if args.config else DEFAULT_PRESET), args.config
    run_config = Path(str(overrides.get("output_dir", ORPOConfig.output_dir))) / CONFIG_FILE
    if args.resume and not args.preset and not args.config and run_config.is_file():
        preset, config_file = None, run_config  # --resume alone continues the run as it was configured
    cfg = resolve_config(preset, config_file, overrides, overrides_source="the command line")
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if not result.is_main_process:  # `accelerate launch`: one report, from the main process
        return result.exit_code
    run = Path(cfg.output_dir)
    print(f"\nrun directory : {run}\nmetrics       : {run / METRICS_FILE}\nconfig        : {run / CONFIG_FILE}")
    print(f"checkpoint    : {result.last_checkpoint}")
    if is_glibc():
        print(f"C heap        : {'lean (glibc small-block caches off)' if lean_heap_active() else 'glibc defaults'}")
    from .procmem import peak_rss_bytes

    print(f"wall time     : {result.timing()}")
    print(f"peak RSS      : {peak_rss_bytes() / 2**30:.2f} GiB (this process)")
    print(result.summary())
    return result.exit_code


def _trains_on_a_gpu(args: argparse.Namespace) -> bool:
    """Whether this run will train on a GPU: one is visible and the command line does not ask for the CPU."""
    from .allocator import has_nvidia_gpu

    devices = [o.split("=", 1)[1].strip().lower() for o in args.overrides if o.startswith("device=")]
    return has_nvidia_gpu() and (not devices or devices[-1] not in ("cpu", "mps"))


def _refuse_a_busy_output_dir(args: argparse.Namespace) -> None:
    """A quick look at an --output-dir given on the command line, before the restart and the model: a shared
    folder or one a run holds is refused at once (the run checks again and takes the lock itself later)."""
    from .run_dir import RunDirBusy, RunLock, refuse_a_shared_folder

    named = [o.split("=", 1)[1] for o in args.overrides if o.startswith(("output_dir=", "output-dir="))]
    text = named[-1] if named else args.output_dir or ""
    folder = Path(text)
    if not text.strip():  # none given, or empty: the config refuses an empty one with its own message
        return
    try:
        refuse_a_shared_folder(text)
        if not folder.is_dir():
            return
        probe = RunLock(folder)
        probe.acquire()
    except (RunDirBusy, ValueError) as exc:
        print(f"orpo-kit train: error: {exc}", file=sys.stderr)
        sys.exit(2)
    probe.release()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `orpo-kit` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come anywhere, also between flags (`--preset tiny lr=1e-3 --max-steps 3 seed=1`)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if argv is None and args.command == "train":  # the console script (never an in-process call): lean heap
        from .allocator import module_args, restart_with_lean_heap

        _refuse_a_busy_output_dir(args)  # before the restart and the model: a busy directory is refused at once
        if not _trains_on_a_gpu(args):  # the C heap's settings matter for CPU tensors only
            restart_with_lean_heap(module_args("orpo_kit", sys.argv[1:]))
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "presets":
            from .config import preset_names

            print("\n".join(preset_names()))
            return 0
        if args.command == "inspect-data":
            return run_inspect(args)
        if args.command == "generate":
            return run_generate(args)
        if args.command == "merge":
            return run_merge(args)
        if args.command == "verify":
            return run_verify(args)
        if args.command == "export":
            return run_export(args)
        if args.command == "eval":
            return run_eval(args)
        if args.command == "bench":
            from .bench import run as run_bench

            return run_bench(args)
        if args.command == "estimate":
            from .memory import estimate_command

            print(estimate_command(args.preset, args.config, args.max_length, args.batch_size, args.overrides))
            return 0
        return run_train(args)
    except (ValueError, OSError, FloatingPointError) as exc:
        print(f"orpo-kit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
