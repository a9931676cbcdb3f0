"""Using a finished run: load it back, generate, merge LoRA into full weights; the best checkpoint.

Acceptance: "A test runs generate and merge on the tiny preset after a few training steps: it first asserts the
adapter model's logits differ from the base model's, then that the merged model's logits equal the adapter
model's (1e-5)". The tiny LoRA run is trained once per module (a few seconds) and shared by the tests.

Torch runs single-threaded here: on a busy 2-core machine two OpenMP threads wait on each other and a tiny
step takes seconds instead of milliseconds (see tests/test_cli_resume.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from orpo_kit import checkpoint as ckpt
from orpo_kit.config import resolve_config
from orpo_kit.runs import find_checkpoint, generate, load_run, side_by_side
from orpo_kit.train import METRICS_FILE, Trainer, read_metrics

CLI = [sys.executable, "-m", "orpo_kit"]
METRIC = "eval_rewards/accuracies"
PROMPTS = ["What is the capital of France?", "Name a primary colour."]
TOL = 1e-5
# peft saves the whole (resized) embedding and lm_head with the adapter of a base model that got ChatML tokens
SAVES_EMBEDDINGS = pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers` to `True`:UserWarning")


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _env() -> dict[str, str]:
    """Offline, single-threaded subprocesses (same numerics as this process)."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def _tiny_lora(run_dir: Path, **overrides):
    """The tiny preset with LoRA, a checkpoint and an evaluation at every step, nothing kept but best + newest."""
    return resolve_config(
        "tiny",
        overrides={
            "output_dir": str(run_dir),
            "use_lora": True,
            "lora_r": 8,
            "lora_alpha": 16,
            "learning_rate": 5e-3,
            "warmup_steps": 0,
            "max_steps": 4,
            "save_steps": 1,
            "eval_steps": 1,
            "logging_steps": 1,
            "per_device_train_batch_size": 4,
            "max_train_pairs": 32,
            "max_eval_pairs": 8,
            "per_device_eval_batch_size": 8,
            "save_total_limit": 1,
            "device": "cpu",
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("tiny-lora") / "run"
    result = Trainer(_tiny_lora(run_dir)).train()
    assert result.steps == 4 and not result.interrupted
    return run_dir


def _chat_ids(tokenizer, prompt: str = PROMPTS[0]) -> torch.Tensor:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def _expected_best(records: list[dict], metric: str, greater_is_better: bool = True) -> int:
    """The step whose evaluation first reached the best value (a tie does not replace an earlier best)."""
    best_step, best = None, None
    for r in records:
        if r["step"] >= 1 and metric in r:
            if best is None or (r[metric] > best if greater_is_better else r[metric] < best):
                best_step, best = r["step"], r[metric]
    assert best_step is not None
    return best_step


# ---- the best checkpoint --------------------------------------------------------------------------------


def test_best_checkpoint_follows_eval_metric_and_survives_pruning(lora_run: Path) -> None:
    records = read_metrics(lora_run)
    assert [r["step"] for r in records if METRIC in r] == [0, 1, 2, 3, 4]
    expected = _expected_best(records, METRIC)
    pointer = json.loads((lora_run / ckpt.CHECKPOINTS / ckpt.BEST_FILE).read_text())
    assert pointer["checkpoint"] == f"step-{expected:06d}" and pointer["metric"] == METRIC
    assert pointer["value"] == pytest.approx(next(r[METRIC] for r in records if r["step"] == expected))
    # save_total_limit=1 keeps only the newest checkpoint, and the best one.
    kept = [p.name for p in ckpt.list_checkpoints(lora_run)]
    assert kept == sorted({f"step-{expected:06d}", "step-000004"})
    assert find_checkpoint(lora_run, "best").name == f"step-{expected:06d}"
    assert find_checkpoint(lora_run, "latest").name == "step-000004"


class ScriptedEval(Trainer):
    """Real evaluation, but the best-model metric at each step is scripted (to force a best in the middle)."""

    script: dict[int, float] = {}

    def evaluate(self, data=None, prefix="eval_"):
        metrics = super().evaluate(data, prefix)
        if data is None:
            metrics[self.cfg.metric_for_best_model] = self.script[self.step]
        return metrics


@pytest.mark.parametrize(
    "metric,greater,values",
    [
        (METRIC, True, [0.5, 0.25, 0.75, 0.5, 0.75, 0.625]),
        ("eval_loss", False, [7.0, 6.0, 5.0, 6.5, 5.0, 5.5]),
    ],
)
def test_best_in_the_middle_is_kept_and_loadable(
    tmp_path: Path, metric: str, greater: bool, values: list[float]
) -> None:
    cfg = _tiny_lora(
        tmp_path / "run", max_steps=5, metric_for_best_model=metric, greater_is_better=greater, max_train_pairs=20
    )
    trainer = ScriptedEval(cfg)
    trainer.script = dict(enumerate(values))
    trainer.train()
    run_dir = tmp_path / "run"
    records = read_metrics(run_dir)
    assert [r[metric] for r in records if metric in r] == values
    assert _expected_best(records, metric, greater) == 2  # strict: the equal value at step 4 does not win
    assert json.loads((run_dir / ckpt.CHECKPOINTS / ckpt.BEST_FILE).read_text()) == {
        "checkpoint": "step-000002",
        "metric": metric,
        "value": values[2],
    }
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == ["step-000002", "step-000005"]

    best, latest = load_run(run_dir, "best"), load_run(run_dir, "latest")
    assert best.checkpoint.name == "step-000002" and latest.checkpoint.name == "step-000005"
    assert load_run(run_dir).checkpoint == best.checkpoint  # "best" is the default
    ids = _chat_ids(best.tokenizer)
    assert not torch.allclose(_logits(best.model, ids), _logits(latest.model, ids), atol=1e-4)
    explicit = load_run(run_dir, str(latest.checkpoint))
    torch.testing.assert_close(_logits(explicit.model, ids), _logits(latest.model, ids), rtol=0, atol=0)


def test_prune_and_mark_best_on_fake_checkpoints(tmp_path: Path) -> None:
    root = tmp_path / ckpt.CHECKPOINTS
    for step in range(1, 6):
        folder = ckpt.checkpoint_path(tmp_path, step)
        folder.mkdir(parents=True)
        (folder / ckpt.STATE_FILE).write_text("{}")
    (root / "step-000009").mkdir()  # no state file: an incomplete checkpoint
    mine, other = root / f".tmp-step-000006-{os.getpid()}", root / ".tmp-step-000007-999999999"
    mine.mkdir()
    other.mkdir()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [f"step-00000{i}" for i in range(1, 6)]
    assert ckpt.best_checkpoint(tmp_path) is None
    assert find_checkpoint(tmp_path, "best").name == "step-000005"  # no best yet: the newest

    ckpt.mark_best(tmp_path, ckpt.checkpoint_path(tmp_path, 2), METRIC, 0.75)
    assert json.loads((root / ckpt.BEST_FILE).read_text()) == {
        "checkpoint": "step-000002",
        "metric": METRIC,
        "value": 0.75,
    }
    assert not list(root.glob("*.tmp"))
    assert ckpt.best_checkpoint(tmp_path) == ckpt.checkpoint_path(tmp_path, 2)

    ckpt._prune(tmp_path, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002", "step-000004", "step-000005"]
    assert mine.is_dir() and not other.exists()  # only other processes' leftovers go
    ckpt._prune(tmp_path, keep_last=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002", "step-000005"]
    assert find_checkpoint(tmp_path, "best").name == "step-000002"
    assert find_checkpoint(tmp_path, "latest").name == "step-000005"

    ckpt.mark_best(tmp_path, ckpt.checkpoint_path(tmp_path, 5), METRIC, 0.875)
    ckpt._prune(tmp_path, keep_last=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000005"]

    shutil.rmtree(ckpt.checkpoint_path(tmp_path, 5))  # best.json naming a deleted checkpoint
    assert ckpt.best_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        find_checkpoint(tmp_path, "best")
    with pytest.raises(FileNotFoundError, match="not a complete"):
        find_checkpoint(tmp_path, str(root / "step-000009"))


# ---- generate and merge ----------------------------------------------------------------------------------


def test_generate_and_merge_after_a_few_steps(lora_run: Path, tmp_path: Path) -> None:
    merged_dir = tmp_path / "merged"
    gen_log, merge_log = tmp_path / "generate.log", tmp_path / "merge.log"
    # The two CLI processes run side by side while this process checks the adapter.
    with gen_log.open("w") as g, merge_log.open("w") as m:
        procs = [
            subprocess.Popen(
                [*CLI, "generate", str(lora_run), "--prompt", PROMPTS[0], "--max-new-tokens", "4"],
                stdout=g,
                stderr=subprocess.STDOUT,
                env=_env(),
                text=True,
            ),
            subprocess.Popen(
                [*CLI, "merge", str(lora_run), str(merged_dir)],
                stdout=m,
                stderr=subprocess.STDOUT,
                env=_env(),
                text=True,
            ),
        ]
        try:
            run = load_run(lora_run)
            assert run.is_adapter and run.checkpoint == find_checkpoint(lora_run, "best")
            ids = _chat_ids(run.tokenizer)
            adapted = _logits(run.model, ids)
            with run.model.disable_adapter():
                base = _logits(run.model, ids)
            assert (adapted - base).abs().max() > 1e-3, "the adapter did not change the model"

            answers = generate(run.model, run.tokenizer, PROMPTS, max_new_tokens=4)
            assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
            assert generate(run.model, run.tokenizer, PROMPTS, max_new_tokens=4) == answers  # greedy
            rows = side_by_side(run, PROMPTS, max_new_tokens=4)
            assert [r["prompt"] for r in rows] == PROMPTS and [r["tuned"] for r in rows] == answers
            with run.model.disable_adapter():
                assert [r["base"] for r in rows] == generate(run.model, run.tokenizer, PROMPTS, max_new_tokens=4)
        finally:
            codes = [p.wait(timeout=180) for p in procs]
    gen_out, merge_out = gen_log.read_text(), merge_log.read_text()
    assert codes[0] == 0, gen_out[-3000:]
    assert codes[1] == 0, merge_out[-3000:]

    assert f"checkpoint: {run.checkpoint}" in gen_out
    assert f"### {PROMPTS[0]}" in gen_out and "--- base :" in gen_out
    assert f"--- tuned: {answers[0]}".rstrip() in gen_out  # same greedy answer as in this process
    assert f"merged model saved to {merged_dir}" in merge_out

    # The merged folder: plain transformers, safetensors, chat template, model card.
    files = {p.name for p in merged_dir.iterdir()}
    assert "model.safetensors" in files and not files & {
        "pytorch_model.bin",
        "adapter_model.safetensors",
        "adapter_config.json",
    }
    card = (merged_dir / "README.md").read_text(encoding="utf-8")
    assert "ORPO" in card and run.checkpoint.name in card and "from `tiny`" in card
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template and tokenizer.chat_template == run.tokenizer.chat_template
    assert tokenizer.eos_token == run.tokenizer.eos_token
    assert not any("lora" in n for n, _ in merged.named_parameters())
    merged_ids = _chat_ids(tokenizer)
    assert torch.equal(merged_ids, ids)
    torch.testing.assert_close(_logits(merged, merged_ids), adapted, rtol=0, atol=TOL)
    torch.testing.assert_close(
        _logits(merged, _chat_ids(tokenizer, PROMPTS[1])),
        _logits(run.model, _chat_ids(run.tokenizer, PROMPTS[1])),
        rtol=0,
        atol=TOL,
    )


# ---- a base model without a chat template: trained new token rows survive save, load and merge ------------


def _base_model_dirs(root: Path) -> tuple[Path, Path]:
    """A tiny byte-level BPE tokenizer without chat template or ChatML tokens and a Mistral of its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from orpo_kit.models.load import build_tiny_model

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        ["Answer briefly and politely.", "The quick brown fox jumps over the lazy dog."] * 4,
        trainers.BpeTrainer(
            vocab_size=290,
            special_tokens=["</s>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>")
    tokenizer.save_pretrained(root / "tokenizer")
    build_tiny_model({"vocab_size": len(tokenizer)}, seed=0).save_pretrained(root / "model")
    return root / "model", root / "tokenizer"


@SAVES_EMBEDDINGS
def test_base_model_run_keeps_trained_token_rows_through_load_and_merge(tmp_path: Path) -> None:
    model_dir, tok_dir = _base_model_dirs(tmp_path)
    cfg = _tiny_lora(
        tmp_path / "run",
        model_name_or_path=str(model_dir),
        tokenizer_name_or_path=str(tok_dir),
        max_steps=2,
        max_train_pairs=8,
        max_eval_pairs=4,
        max_length=128,
        max_prompt_length=64,
    )
    trainer = Trainer(cfg)
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    ids = _chat_ids(trainer.tokenizer)
    new_ids = trainer.tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert new_ids[0] in ids[0].tolist()
    expected = _logits(trained, ids)

    torch.manual_seed(1234)  # load_run must not depend on the RNG (new rows are sampled at resize time)
    run = load_run(tmp_path / "run", "latest")
    assert run.tokenizer.chat_template == trainer.tokenizer.chat_template and run.tokenizer.eos_token == "<|im_end|>"
    torch.testing.assert_close(_logits(run.model, ids), expected, rtol=0, atol=TOL)
    with run.model.disable_adapter():
        base = _logits(run.model, ids)
    assert (base - expected).abs().max() > 1e-3

    from orpo_kit.runs import merge_run

    out = merge_run(tmp_path / "run", tmp_path / "merged", "latest")
    merged = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    assert merged.get_input_embeddings().weight.shape[0] % 64 == 0
    torch.testing.assert_close(_logits(merged, ids), expected, rtol=0, atol=TOL)
    assert AutoTokenizer.from_pretrained(out).chat_template == trainer.tokenizer.chat_template
    assert (tmp_path / "run" / METRICS_FILE).is_file()


@SAVES_EMBEDDINGS
def test_4bit_base_model_run_loads_back(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes", reason='4-bit loading needs bitsandbytes: pip install "orpo_kit[qlora]"')
    model_dir, tok_dir = _base_model_dirs(tmp_path)
    cfg = _tiny_lora(
        tmp_path / "run",
        model_name_or_path=str(model_dir),
        tokenizer_name_or_path=str(tok_dir),
        load_in_4bit=True,
        bnb_4bit_compute_dtype="float32",
        max_steps=1,
        max_train_pairs=4,
        max_eval_pairs=2,
        max_length=128,
        max_prompt_length=64,
    )
    Trainer(cfg).train()
    run = load_run(tmp_path / "run", "latest")  # IndexError: index <vocab> is out of bounds (embeddings not grown)
    assert run.is_adapter
