"""`orpo-kit export`: merged weights, GGUF written by llama.cpp's own converter, a Modelfile and a model card.

Acceptance: "export the tiny or SmolLM2 run to f16 GGUF, load the file back with transformers' GGUF loader, and
compare with the merged model: the same tokens for the chat-templated prompts of the eval split, logits within
1e-2 (f16) on them, identical greedy answers for 5 prompts"; "for a Mistral-shaped model (the tiny Mistral with
ChatML added, LoRA with trainable new rows): the exported GGUF's tokenizer maps the chat template's special tokens
to single ids, and the round trip above holds"; and with a real client (tests marked `llamacpp`, run by .ci/run):
"llama-cpp-python loads the exported SmolLM2 GGUF (f16 and q8_0) and, with the chat template from the file, gives
the same greedy answers as the merged model for at least 4 of 5 prompts (f16: 5 of 5); the stop token ends each
answer".

The converter comes from $ORPO_KIT_LLAMA_CPP (CI points it at the source distribution it builds llama-cpp-python
from) or is fetched once from PyPI into the orpo_kit cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import gguf
import pytest
import torch

from orpo_kit.config import resolve_config
from orpo_kit.data import load_preference_pairs
from orpo_kit.export import ConverterFailed, export_run
from orpo_kit.export import converter as conv
from orpo_kit.export.modelfile import CHATML_GO_TEMPLATE, chatml_layout
from orpo_kit.export.roundtrip import chat_ids, compare, load_gguf, load_merged
from orpo_kit.run_dir import read_metrics
from orpo_kit.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
CHATML = ["<|im_start|>", "<|im_end|>"]
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is the capital of France?"},
    ],
]


def _short_run(run_dir: Path, preset: str, **overrides) -> Path:
    """Two LoRA steps, a checkpoint and an evaluation at step 2 (and the one before training)."""
    cfg = resolve_config(
        preset,
        overrides={
            "output_dir": str(run_dir),
            "use_lora": True,
            "max_steps": 2,
            "eval_steps": 2,
            "save_steps": 2,
            "logging_steps": 1,
            "per_device_train_batch_size": 4,
            "max_train_pairs": 16,
            "max_eval_pairs": 8,
            "max_length": 128,
            "max_prompt_length": 64,
            "device": "cpu",
            **overrides,
        },
    )
    result = Trainer(cfg).train()
    assert result.steps == 2
    return run_dir


def eval_prompts() -> list[list[dict[str, str]]]:
    """The chat prompts of the built-in eval split (all of them)."""
    return [p.prompt_messages for p in load_preference_pairs("builtin") if p.split == "eval"]


def gguf_fields(path: Path) -> dict:
    """A GGUF file's metadata as plain values (token lists as lists)."""
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def _needs_converter() -> None:
    """Skip (fail under CI=true) when llama.cpp's converter is neither given, cached nor downloadable."""
    try:
        conv.converter_dir()
    except OSError as exc:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


# ---- SmolLM2 (Llama architecture, BPE, ChatML with a default system prompt) -------------------------------


@pytest.fixture(scope="module")
def smol_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from orpo_kit.models.load import smol_dir

    try:
        smol_dir()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    _needs_converter()
    root = tmp_path_factory.mktemp("smol-export")
    run = _short_run(root / "run", "smol")
    export_run(run, root / "smol-orpo", gguf=["f16", "q8_0"])
    return root


@pytest.mark.smol
def test_smollm2_f16_gguf_reads_back_as_the_merged_model(smol_export: Path) -> None:
    out = smol_export / "smol-orpo"
    merged, from_gguf = load_merged(out), load_gguf(out / "smol-orpo-f16.gguf")
    prompts = eval_prompts()
    result = compare(merged, from_gguf, prompts, n_generate=5, max_new_tokens=32)
    print(f"{result.same_ids}/{result.prompts} prompts with the same ids; max |logit diff| {result.max_logit_diff:.2e}")
    for a in result.answers:
        print(f"  {a['prompt'][:40]!r}: merged {a['merged'][:50]!r} | gguf {a['gguf'][:50]!r}")
    assert result.prompts == len(prompts) >= 100
    assert result.same_ids == result.prompts
    assert result.max_logit_diff <= 1e-2
    assert result.same_answers == 5


@pytest.mark.smol
def test_smollm2_gguf_carries_the_chat_template_and_the_stop_token(smol_export: Path) -> None:
    out = smol_export / "smol-orpo"
    _, tokenizer = load_merged(out)
    for kind in ("f16", "q8_0"):
        fields = gguf_fields(out / f"smol-orpo-{kind}.gguf")
        assert fields["general.architecture"] == "llama" and fields["general.name"] == "smol-orpo"
        assert fields["tokenizer.chat_template"] == tokenizer.chat_template
        assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert fields["tokenizer.ggml.pre"] == "smollm"  # llama.cpp recognised the real tokenizer: no fallback
        tokens = fields["tokenizer.ggml.tokens"]
        assert [tokens[i] for i in tokenizer.convert_tokens_to_ids(CHATML)] == CHATML
    # q8_0 is about half of f16 (8.5 bits per weight against 16)
    sizes = {k: (out / f"smol-orpo-{k}.gguf").stat().st_size for k in ("f16", "q8_0")}
    assert 0.45 < sizes["q8_0"] / sizes["f16"] < 0.6


def _go_template(template: str, messages: list[dict[str, str]]) -> str:
    """Ollama's rendering of the ChatML TEMPLATE this module writes (range over .Messages, .Role, .Content)."""
    head, rest = template.split("{{- range .Messages }}", 1)
    body, tail = rest.split("{{ end }}", 1)
    turns = "".join(body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"]) for m in messages)
    return head + turns + tail


def _modelfile(folder: Path) -> tuple[str, str | None, list[str]]:
    """TEMPLATE, SYSTEM and the stop tokens of a Modelfile."""
    text = (folder / "Modelfile").read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""', text, re.S | re.M)
    system = re.search(r'^SYSTEM """(.*?)"""', text, re.S | re.M)
    assert template, text
    return template.group(1), system.group(1) if system else None, re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)


@pytest.mark.smol
def test_smollm2_modelfile_prompts_equal_the_chat_template(smol_export: Path) -> None:
    out = smol_export / "smol-orpo"
    _, tokenizer = load_merged(out)
    template, system, stops = _modelfile(out)
    assert template == CHATML_GO_TEMPLATE
    assert system and "SmolLM" in system  # SmolLM2's own default system prompt
    assert "FROM ./smol-orpo-f16.gguf" in (out / "Modelfile").read_text()
    assert "<|im_end|>" in stops
    for messages in CONVERSATIONS:
        default = [] if messages[0]["role"] == "system" else [{"role": "system", "content": system}]
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert _go_template(template, default + messages) == expected


@pytest.mark.smol
def test_the_model_card_names_base_data_lambda_steps_accuracies_and_licences(smol_export: Path) -> None:
    card = (smol_export / "smol-orpo" / "README.md").read_text(encoding="utf-8")
    evals = [r["eval_rewards/accuracies"] for r in read_metrics(smol_export / "run") if "eval_rewards/accuracies" in r]
    assert len(evals) == 2  # before training and at step 2
    assert f"{evals[0]:.3f} at the first evaluation, {evals[-1]:.3f} at this checkpoint" in card
    for text in ("`smollm2`", "`builtin`", "lambda (orpo_lambda) = 1.0", "`step-000002` (2 optimizer steps)"):
        assert text in card
    assert card.count("Apache-2.0") == 2  # the base's and the data's
    assert "smol-orpo-f16.gguf" in card and "smol-orpo-q8_0.gguf" in card


# ---- a Mistral-shaped model: SentencePiece-style tokenizer, no chat template, ChatML rows added ------------


def _spm_base(root: Path) -> tuple[Path, Path]:
    """A tiny Mistral and a Llama/Mistral-style tokenizer (SentencePiece BPE with byte fallback, BOS added, no
    chat template), trained here on the built-in texts: what a Mistral base model folder looks like."""
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    from orpo_kit.models.load import build_tiny_model

    texts = []
    for pair in load_preference_pairs("builtin"):
        texts += [m["content"] for m in pair.prompt_messages] + [pair.chosen, pair.rejected]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=600,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    spm_dir = root / "spm"
    spm_dir.mkdir()
    (spm_dir / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = LlamaTokenizer.from_pretrained(spm_dir, add_bos_token=True)
    assert tokenizer.chat_template is None and tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id
    tokenizer.save_pretrained(root / "tokenizer")
    build_tiny_model({"vocab_size": len(tokenizer)}, seed=0).save_pretrained(root / "model")
    return root / "model", root / "tokenizer"


@pytest.fixture(scope="module")
def mistral_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _needs_converter()
    root = tmp_path_factory.mktemp("mistral-export")
    model_dir, tok_dir = _spm_base(root)
    run = _short_run(
        root / "run", "tiny", model_name_or_path=str(model_dir), tokenizer_name_or_path=str(tok_dir), learning_rate=2e-2
    )
    export_run(run, root / "mistral-orpo", gguf=["f16"], checkpoint="latest")
    return root


def test_mistral_shaped_gguf_keeps_chatml_tokens_single_and_reads_back_as_the_merged_model(
    mistral_export: Path,
) -> None:
    out = mistral_export / "mistral-orpo"
    gguf_file = out / "mistral-orpo-f16.gguf"
    merged, from_gguf = load_merged(out), load_gguf(gguf_file)
    tokenizer = merged[1]
    ids = tokenizer.convert_tokens_to_ids(CHATML)
    assert min(ids) >= 600  # added to the vocabulary by the run (ChatML), rows trained
    fields = gguf_fields(gguf_file)
    assert fields["tokenizer.ggml.model"] == "llama"  # SentencePiece-style
    assert [fields["tokenizer.ggml.tokens"][i] for i in ids] == CHATML
    assert all(fields["tokenizer.ggml.token_type"][i] == gguf.TokenType.CONTROL for i in ids)
    assert len(fields["tokenizer.ggml.tokens"]) == merged[0].get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert fields["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == ids[1]
    # Each special token is one id in the GGUF's tokenizer too, inside text as the template writes it
    assert chat_ids(from_gguf[1], CONVERSATIONS[2]) == chat_ids(tokenizer, CONVERSATIONS[2])
    assert from_gguf[1].convert_tokens_to_ids(CHATML) == ids

    result = compare(merged, from_gguf, eval_prompts(), n_generate=5, max_new_tokens=16)
    print(f"{result.same_ids}/{result.prompts} prompts with the same ids; max |logit diff| {result.max_logit_diff:.2e}")
    assert result.same_ids == result.prompts
    assert result.max_logit_diff <= 1e-2
    assert result.same_answers == 5


def test_mistral_shaped_modelfile_leaves_bos_to_the_runtime(mistral_export: Path) -> None:
    out = mistral_export / "mistral-orpo"
    _, tokenizer = load_merged(out)
    layout = chatml_layout(tokenizer)
    assert layout is not None and layout.leading_bos and layout.default_system is None
    template, system, stops = _modelfile(out)
    assert system is None and sorted(stops) == sorted(CHATML)
    for messages in CONVERSATIONS:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tokenizer.bos_token + _go_template(template, messages) == expected


# ---- the tiny preset's own tokenizer: an unknown GPT-2-style BPE vocabulary ------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _short_run(tmp_path_factory.mktemp("tiny-export") / "run", "tiny")


def test_cli_export_of_the_tiny_preset(tiny_run: Path, tmp_path: Path) -> None:
    _needs_converter()
    out = tmp_path / "tiny-orpo"
    cmd = [sys.executable, "-m", "orpo_kit", "export", str(tiny_run), str(out), "--gguf", "f16,q8_0"]
    done = subprocess.run([*cmd, "--checkpoint", "step-000002"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"exported {tiny_run / 'checkpoints' / 'step-000002'} to {out}" in done.stdout
    assert "GGUF f16:" in done.stdout and "GGUF q8_0:" in done.stdout and "ollama create tiny-orpo" in done.stdout
    fields = gguf_fields(out / "tiny-orpo-f16.gguf")
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"  # the fallback
    result = compare(load_merged(out), load_gguf(out / "tiny-orpo-f16.gguf"), eval_prompts()[:40], n_generate=2)
    assert result.same_ids == 40 and result.max_logit_diff <= 1e-2 and result.same_answers == 2

    again = subprocess.run(cmd, capture_output=True, text=True)  # a second export into the same folder
    assert again.returncode == 2 and "is not empty" in again.stderr and "--overwrite" in again.stderr
    assert (out / "tiny-orpo-f16.gguf").is_file()
    kept = (out / "tiny-orpo-f16.gguf").stat().st_size
    replaced = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("tiny-orpo.replaced-")]
    assert len(aside) == 1 and (aside[0] / "tiny-orpo-f16.gguf").stat().st_size == kept


def test_a_failing_converter_leaves_no_folder_and_says_why(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "llama.cpp"
    (fake / "conversion").mkdir(parents=True)
    (fake / "conversion" / "__init__.py").write_text("")
    (fake / "conversion" / "base.py").write_text("class TextModel:\n    get_vocab_base_pre = None\n")
    (fake / conv.CONVERTER).write_text("import sys\nprint('No space left on device')\nsys.exit(3)\n")
    monkeypatch.setenv(conv.LLAMA_CPP_ENV, str(fake))
    with pytest.raises(ConverterFailed, match=r"(?s)exit 3.*No space left on device"):
        export_run(tiny_run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_unknown_gguf_types_are_refused_before_any_work(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="q4_k: choose from f16, q8_0, bf16, f32"):
        export_run(tiny_run, tmp_path / "out", gguf=["q4_k"])
    assert not (tmp_path / "out").exists()


# ---- where the converter comes from ---------------------------------------------------------------------


def _fake_sdist(path: Path, with_converter: bool = True) -> Path:
    """A tarball shaped like llama-cpp-python's source distribution."""
    src = path.parent / "src" / "llama_cpp_python-9.9.9" / "vendor" / "llama.cpp"
    (src / "conversion").mkdir(parents=True)
    (src / "gguf-py" / "gguf").mkdir(parents=True)
    (src / "conversion" / "__init__.py").write_text("")
    (src / "gguf-py" / "gguf" / "__init__.py").write_text("")
    (src / "LICENSE").write_text("MIT")
    (src / "ggml.c").write_text("int main;")  # not part of the converter
    if with_converter:
        (src / conv.CONVERTER).write_text("print('converter')")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src.parent.parent, arcname="llama_cpp_python-9.9.9")
    return path


def test_the_converter_is_unpacked_from_a_source_distribution_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORPO_KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(conv.LLAMA_CPP_ENV, str(_fake_sdist(tmp_path / "llama_cpp_python-9.9.9.tar.gz")))
    found = conv.converter_dir()
    assert (found / conv.CONVERTER).is_file() and (found / "gguf-py" / "gguf").is_dir()
    assert not (found / "ggml.c").exists()  # only the converter's parts
    assert found.parent == tmp_path / "cache"
    assert conv.converter_dir() == found  # cached

    monkeypatch.setenv(conv.LLAMA_CPP_ENV, str(_fake_sdist(tmp_path / "other" / "x.tar.gz", with_converter=False)))
    with pytest.raises(FileNotFoundError, match="holds no vendor/llama.cpp/convert_hf_to_gguf.py"):
        conv.converter_dir()
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(b"\x1f\x8b not really gzip")
    monkeypatch.setenv(conv.LLAMA_CPP_ENV, str(damaged))
    with pytest.raises(OSError, match="damaged.tar.gz is not a readable llama-cpp-python source distribution"):
        conv.converter_dir()
    monkeypatch.setenv(conv.LLAMA_CPP_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no convert_hf_to_gguf.py in that folder"):
        conv.converter_dir()


def test_without_a_given_converter_the_pinned_release_is_downloaded_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORPO_KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(conv.LLAMA_CPP_ENV, raising=False)
    asked: list[list[str]] = []

    def fake_pip(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        asked.append(cmd)
        folder = Path(cmd[cmd.index("-d") + 1])
        _fake_sdist(folder / f"llama_cpp_python-{conv.LLAMA_CPP_PYTHON}.tar.gz")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(conv.subprocess, "run", fake_pip)
    found = conv.converter_dir()
    assert found == tmp_path / "cache" / f"llama.cpp-{conv.LLAMA_CPP_PYTHON}"
    assert asked and f"llama-cpp-python=={conv.LLAMA_CPP_PYTHON}" in asked[0] and "--no-binary" in asked[0]
    conv.converter_dir()
    assert len(asked) == 1  # the second call uses the cache

    def offline(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setenv("ORPO_KIT_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(conv.subprocess, "run", offline)
    with pytest.raises(OSError, match=r"(?s)could not download.*network unreachable.*ORPO_KIT_LLAMA_CPP"):
        conv.converter_dir()


def test_gpt2_fallback_only_for_a_plain_gpt2_pretokenizer(tmp_path: Path) -> None:
    from orpo_kit.export.convert_child import gpt2_pretokenizer
    from orpo_kit.models.load import tiny_tokenizer_dir

    assert gpt2_pretokenizer(tiny_tokenizer_dir())
    spec = json.loads((tiny_tokenizer_dir() / "tokenizer.json").read_text())
    for change in (
        {"normalizer": {"type": "Lowercase"}},
        {"pre_tokenizer": {"type": "ByteLevel", "use_regex": False}},
        {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "ByteLevel"}]}},
        {"model": {**spec["model"], "type": "WordPiece"}},
    ):
        (tmp_path / "tokenizer.json").write_text(json.dumps({**spec, **change}))
        assert not gpt2_pretokenizer(tmp_path), change
    assert not gpt2_pretokenizer(tmp_path / "missing")


def test_merge_dtype_follows_the_first_gguf_type() -> None:
    from orpo_kit.export import MERGE_DTYPES

    assert {"f16": torch.float16, "q8_0": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32} == MERGE_DTYPES


# ---- a real client: llama.cpp through llama-cpp-python ---------------------------------------------------


def _llama(path: Path):
    """llama-cpp-python's model of a GGUF file (skipped without the package; CI=true fails instead)."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        message = f"llama-cpp-python is not installed (pip install llama-cpp-python=={conv.LLAMA_CPP_PYTHON}): {exc}"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return Llama(model_path=str(path), n_ctx=1024, n_threads=1, seed=0, verbose=False)


@pytest.mark.smol
@pytest.mark.llamacpp
@pytest.mark.parametrize(("kind", "at_least"), [("f16", 5), ("q8_0", 4)])
def test_llama_cpp_answers_like_the_merged_model(smol_export: Path, kind: str, at_least: int) -> None:
    from orpo_kit.runs import generate

    out = smol_export / "smol-orpo"
    model, tokenizer = load_merged(out)
    prompts = [p[-1]["content"] for p in eval_prompts()[:5]]
    expected = generate(model, tokenizer, prompts, max_new_tokens=64)
    llm = _llama(out / f"smol-orpo-{kind}.gguf")
    assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    same = 0
    for prompt, want in zip(prompts, expected, strict=True):
        reply = llm.create_chat_completion([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=64)
        choice = reply["choices"][0]
        got = choice["message"]["content"].strip()
        print(
            f"{kind} {prompt[:40]!r}: llama.cpp {got[:60]!r} | transformers {want[:60]!r} ({choice['finish_reason']})"
        )
        assert choice["finish_reason"] == "stop"  # <|im_end|> ended the answer, not the token limit
        assert "<|im_end|>" not in got and "<|im_start|>" not in got
        same += got == want
    llm.close()
    assert same >= at_least


@pytest.mark.llamacpp
def test_llama_cpp_tokenizes_mistral_shaped_chat_prompts_like_the_merged_tokenizer(mistral_export: Path) -> None:
    out = mistral_export / "mistral-orpo"
    _, tokenizer = load_merged(out)
    llm = _llama(out / "mistral-orpo-f16.gguf")
    ids = tokenizer.convert_tokens_to_ids(CHATML)
    assert [llm.tokenize(t.encode(), add_bos=False, special=True) for t in CHATML] == [[i] for i in ids]
    prompts = eval_prompts()
    same = 0
    for prompt in prompts:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        same += llm.tokenize(text.encode(), add_bos=False, special=True) == chat_ids(tokenizer, prompt)
    llm.close()
    assert same == len(prompts)


def test_a_full_fine_tune_exports_too_in_f32_and_bf16(tmp_path: Path) -> None:
    _needs_converter()
    run = _short_run(tmp_path / "run", "tiny", use_lora=False)
    result = export_run(run, tmp_path / "full", gguf=["f32", "bf16"], checkpoint="latest")
    assert set(result.gguf) == {"f32", "bf16"}
    merged = load_merged(result.folder)
    assert next(merged[0].parameters()).dtype == torch.float32  # loaded as float32; saved in the first type's dtype
    assert json.loads((result.folder / "config.json").read_text())["dtype"] == "float32"
    exact = compare(merged, load_gguf(result.gguf["f32"]), eval_prompts()[:20], n_generate=2)
    assert exact.same_ids == 20 and exact.max_logit_diff <= 1e-4 and exact.same_answers == 2
    assert gguf_fields(result.gguf["bf16"])["general.file_type"] == gguf.LlamaFileType.MOSTLY_BF16
    card = (result.folder / "README.md").read_text(encoding="utf-8")
    assert "| training | full;" in card


def test_a_qlora_run_exports_from_the_full_precision_base(mistral_export: Path, tmp_path: Path) -> None:
    """The 7B recipe's path at tiny size: LoRA over a 4-bit base (ChatML rows trained), exported like `merge`
    does it: the adapter folded into the base reloaded in full precision, never into the 4-bit rounding."""
    pytest.importorskip("bitsandbytes", reason='4-bit loading needs bitsandbytes: pip install "orpo_kit[qlora]"')
    run = _short_run(
        tmp_path / "run",
        "tiny",
        model_name_or_path=str(mistral_export / "model"),
        tokenizer_name_or_path=str(mistral_export / "tokenizer"),
        load_in_4bit=True,
        bnb_4bit_compute_dtype="float32",
        learning_rate=2e-2,
    )
    result = export_run(run, tmp_path / "qlora-orpo", checkpoint="latest")
    merged = load_merged(result.folder)
    assert not [m for m in merged[0].modules() if "4bit" in type(m).__name__]
    assert json.loads((result.folder / "config.json").read_text()).get("quantization_config") is None
    check = compare(merged, load_gguf(result.gguf["f16"]), eval_prompts()[:40], n_generate=3, max_new_tokens=12)
    assert check.same_ids == 40 and check.max_logit_diff <= 1e-2 and check.same_answers == 3
    fields = gguf_fields(result.gguf["f16"])
    assert [fields["tokenizer.ggml.tokens"][i] for i in merged[1].convert_tokens_to_ids(CHATML)] == CHATML
    assert "in 4-bit NF4 during training" in (result.folder / "README.md").read_text(encoding="utf-8")
