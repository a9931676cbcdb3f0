"""Build the tiny preset's tokenizer (byte-level BPE + ChatML) that ships inside the package.

Run from the repository root: `python scripts/make_tiny_tokenizer.py`. It trains on the built-in
pairs, so any text still tokenizes (byte fallback) while the built-in data stays short. Deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "orpo_kit" / "data" / "builtin" / "pairs.jsonl"
OUT = ROOT / "orpo_kit" / "models" / "assets" / "tiny-tokenizer"
VOCAB_SIZE = 1024  # the tiny model's embedding has exactly this many rows
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus() -> list[str]:
    """All prompt and answer texts of the built-in pairs, plus the role names."""
    texts = ["system\nuser\nassistant\n"]
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts += [row["prompt"], row["chosen"], row["rejected"]]
    return texts


def main() -> None:
    """Train, wrap as a transformers fast tokenizer with ChatML, and save."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token=None,
        bos_token=None,
        chat_template=CHATML,
        model_max_length=4096,
    )
    fast.save_pretrained(OUT)
    print(f"saved a {len(fast)}-token tokenizer to {OUT}")


if __name__ == "__main__":
    main()
