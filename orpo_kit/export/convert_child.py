"""Child process: run llama.cpp's `convert_hf_to_gguf.py` from a llama.cpp folder, unchanged but for one fallback.

    python -m orpo_kit.export.convert_child LLAMA_CPP_DIR MODEL_DIR --outfile F.gguf --outtype f16

Two fallbacks, both only where llama.cpp's converter has no answer of its own:

1. llama.cpp names a byte-level BPE tokenizer's pre-tokenizer by hashing how the tokenizer splits a
test text, so a vocabulary it has not seen (one trained for a small experiment) is refused even when its
pre-tokenizer is exactly GPT-2's. Only then, and only when `tokenizer.json` says so (one ByteLevel pre-tokenizer
with GPT-2's regular expression, no normalizer), the file is written with llama.cpp's "gpt-2" pre-tokenizer.
Any other unknown tokenizer is refused as llama.cpp refuses it.

2. A SentencePiece-style tokenizer (Llama, Mistral) saved as `tokenizer.json` alone (transformers 5 writes no
`tokenizer.model`) goes through the converter's `LlamaHfVocab`, which gives every token the placeholder score
-1000. llama.cpp merges by score, so it would split words differently from the tokenizer the model trained with.
Here each token gets the score SentencePiece would give it: minus the rank of the merge that makes it (earlier
merges win), and below every merge for tokens no merge makes (single characters, bytes, specials). And where that
tokenizer.json writes the word-start marker only at the very start of a text (Metaspace, prepend_scheme "first" or
"never", transformers 5's Llama tokenizers), the file says `add_space_prefix = false`: llama.cpp would otherwise
add one after every special token, so "<|im_start|>user" would become "<|im_start|> user". Chat prompts open
with a special token, so their tokens then agree exactly; a raw text without one loses its leading marker.
"""

from __future__ import annotations

import importlib
import json
import runpy
import sys
from pathlib import Path
from typing import Any


def gpt2_pretokenizer(model_dir: Path) -> bool:
    """Whether the folder's tokenizer.json pre-tokenizes exactly like GPT-2 (byte-level, GPT-2's regex)."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return False
    spec = json.loads(path.read_text(encoding="utf-8"))
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 1:
        pre = pre["pretokenizers"][0]
    return (
        spec.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True) is True
        and (spec.get("model") or {}).get("type") == "BPE"
    )


def _with_gpt2_fallback(original: Any, model_dir: Path) -> Any:
    """get_vocab_base_pre that answers "gpt-2" for an unknown hash of a GPT-2-style pre-tokenizer."""

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if not gpt2_pretokenizer(model_dir):
                raise
            print("orpo_kit: unknown vocabulary with GPT-2's byte-level pre-tokenizer: tokenizer.ggml.pre = gpt-2")
            return "gpt-2"

    return get_vocab_base_pre


def merge_scores(tokenizer_json: Path) -> dict[str, float]:
    """Score per token text from a BPE tokenizer.json: -rank of the merge that makes it."""
    merges = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"].get("merges") or []
    scores: dict[str, float] = {}
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        scores.setdefault(left + right, -float(rank))
    return scores


def _with_merge_scores(vocab_class: Any) -> None:
    """Make LlamaHfVocab score tokens by merge rank instead of its placeholder."""

    def get_token_score(self: Any, token_id: int) -> float:
        if not hasattr(self, "_orpo_kit_scores"):
            self._orpo_kit_scores = merge_scores(Path(self.fname_tokenizer))
            print("orpo_kit: SentencePiece-style tokenizer.json: token scores from the merge ranks")
        text = self.tokenizer.convert_ids_to_tokens(token_id)
        return self._orpo_kit_scores.get(text, -float(len(self._orpo_kit_scores) + 1))

    vocab_class.get_token_score = get_token_score


def prefix_only_at_text_start(tokenizer_json: Path) -> bool:
    """Whether a tokenizer.json's Metaspace pre-tokenizer adds the word-start marker only at the text's start."""
    pre = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    return pre.get("type") == "Metaspace" and pre.get("prepend_scheme") in ("first", "never")


def _with_space_prefix_from_tokenizer_json(original: Any) -> Any:
    """_set_vocab_llama_hf that records add_space_prefix = false where the tokenizer.json says so."""

    def _set_vocab_llama_hf(self: Any) -> None:
        original(self)
        if prefix_only_at_text_start(Path(self.dir_model) / "tokenizer.json"):
            print("orpo_kit: Metaspace adds the word-start marker at the text's start only: add_space_prefix = false")
            self.gguf_writer.add_add_space_prefix(False)

    return _set_vocab_llama_hf


def main(argv: list[str]) -> None:
    """Run the converter as its own script would run, with the fallback installed."""
    llama_cpp, model_dir, rest = Path(argv[0]), Path(argv[1]), argv[2:]
    sys.path[:0] = [str(llama_cpp / "gguf-py"), str(llama_cpp)]
    base = importlib.import_module("conversion.base")  # llama.cpp's own, from the folder just put first
    vocab = importlib.import_module("gguf")  # llama.cpp's gguf-py, as the converter imports it
    # Each fallback wraps a hook only where this llama.cpp has it (another llama.cpp tree may not)
    if hasattr(getattr(base, "TextModel", None), "get_vocab_base_pre"):
        base.TextModel.get_vocab_base_pre = _with_gpt2_fallback(base.TextModel.get_vocab_base_pre, model_dir)
    if hasattr(getattr(base, "TextModel", None), "_set_vocab_llama_hf"):
        base.TextModel._set_vocab_llama_hf = _with_space_prefix_from_tokenizer_json(base.TextModel._set_vocab_llama_hf)
    if hasattr(vocab, "LlamaHfVocab"):
        _with_merge_scores(vocab.LlamaHfVocab)
    sys.argv = [str(llama_cpp / "convert_hf_to_gguf.py"), str(model_dir), *rest]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
