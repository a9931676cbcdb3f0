"""Workloads of `orpo-kit bench`: a word-level tokenizer, a random Mistral and random preference pairs.

Everything is generated from seeds, so orpo_kit and TRL's ORPOTrainer train on the very same token ids:

- The tokenizer has exactly 32,000 entries: `<unk>`, `<s>` (bos), `</s>` (eos), `<pad>` and the words
  `w0` ... `w31995`; text is split on whitespace, one word = one token. Its chat template renders
  `<s>` + the user text for the prompt and `" " + answer + " </s>"` for an answer, which is what TRL's
  `tokenize_row` does with standard (string) rows: bos before the prompt, eos after each completion.
- A pair's lengths count those special tokens: a prompt of P tokens is `<s>` + P - 1 words, a completion of
  C tokens is C - 1 words + `</s>`. Each length is drawn uniformly within +-20% of its mix's mean.
- The model is a random-weight fp32 `MistralForCausalLM` (CPU: hidden 512, 8 layers, 55M parameters;
  GPU: Mistral-7B's own config, quantized to 4-bit when it is loaded), saved once with the tokenizer so
  every worker process loads the same files.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0, 1, 2, 3 (Mistral's order for the first three)
UNK_ID, BOS_ID, EOS_ID, PAD_ID = range(4)
VOCAB_SIZE = 32_000  # Mistral's vocabulary size
NUM_WORDS = VOCAB_SIZE - len(SPECIAL_TOKENS)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
)
LENGTH_SPREAD = 0.2  # lengths uniform within +-20% of the mean


@dataclass(frozen=True)
class Mix:
    """Mean token lengths of a workload: prompt (bos included) and each completion (eos included)."""

    name: str
    prompt_tokens: int
    completion_tokens: int
    description: str = ""

    def bounds(self, mean: int) -> tuple[int, int]:
        """Smallest and largest length drawn for a mean (at least 2: one special token and one word)."""
        return max(2, round(mean * (1 - LENGTH_SPREAD))), max(2, round(mean * (1 + LENGTH_SPREAD)))


MIXES: dict[str, Mix] = {
    "prompt_heavy": Mix("prompt_heavy", 384, 128, "multi-turn dialogue: long shared prompt, short answers"),
    "uf_like": Mix("uf_like", 100, 250, "UltraFeedback-like: short prompt, long answers"),
    # GPU workloads: rows of about 1024 / 2048 tokens (prompt + one completion), half prompt, half answer
    "len1024": Mix("len1024", 512, 512, "GPU: about 1024 tokens per row (prompt 512 + completion 512)"),
    "len2048": Mix("len2048", 1024, 1024, "GPU: about 2048 tokens per row (prompt 1024 + completion 1024)"),
    # tests only
    "tiny": Mix("tiny", 24, 12, "unit tests"),
}
CPU_MIXES = ("prompt_heavy", "uf_like")
GPU_MIXES = ("len1024", "len2048")

# Model shapes (MistralConfig fields). "cpu" is the benchmark's CPU model; "tiny" is for tests.
MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "cpu": dict(
        hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2
    ),
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
}
MISTRAL_7B_CONFIG = Path(__file__).parents[1] / "models" / "assets" / "mistral-7b-v0.1-config.json"


# ---- pairs ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchPair:
    """Token ids of one pair exactly as both trainers see them, and the texts that tokenize to them."""

    prompt_ids: list[int]  # <s> + words
    chosen_ids: list[int]  # words + </s>
    rejected_ids: list[int]  # words + </s>

    @property
    def logical_tokens(self) -> int:
        """Tokens of prompt + chosen and prompt + rejected, without padding: what a plain implementation runs."""
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    @property
    def prompt_text(self) -> str:
        """The prompt's words (no bos: TRL adds it, the chat template adds it)."""
        return words_text(self.prompt_ids[1:])

    @property
    def chosen_text(self) -> str:
        """The chosen answer's words (no eos)."""
        return words_text(self.chosen_ids[:-1])

    @property
    def rejected_text(self) -> str:
        """The rejected answer's words (no eos)."""
        return words_text(self.rejected_ids[:-1])


def word(token_id: int) -> str:
    """The word of a (non-special) token id."""
    return f"w{token_id - len(SPECIAL_TOKENS)}"


def words_text(token_ids: list[int]) -> str:
    """Space-separated words of token ids."""
    return " ".join(word(i) for i in token_ids)


def make_pairs(mix: Mix, n_pairs: int, seed: int = 0) -> list[BenchPair]:
    """`n_pairs` random pairs with lengths uniform within +-20% of the mix's means (seeded)."""
    rng = random.Random(f"{mix.name}-{seed}")
    first = len(SPECIAL_TOKENS)

    def words(n: int) -> list[int]:
        return [rng.randrange(first, VOCAB_SIZE) for _ in range(n)]

    out = []
    for _ in range(n_pairs):
        p = rng.randint(*mix.bounds(mix.prompt_tokens))
        c, r = (rng.randint(*mix.bounds(mix.completion_tokens)) for _ in range(2))
        out.append(BenchPair([BOS_ID] + words(p - 1), words(c - 1) + [EOS_ID], words(r - 1) + [EOS_ID]))
    return out


def save_pairs(pairs: list[BenchPair], path: Path) -> None:
    """Write pairs (ids and texts) as JSON: the one file every worker of a mix reads."""
    rows = [
        {**asdict(p), "prompt": p.prompt_text, "chosen": " " + p.chosen_text, "rejected": " " + p.rejected_text}
        for p in pairs
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")


def load_pairs(path: Path) -> list[BenchPair]:
    """Pairs written by `save_pairs`."""
    return [
        BenchPair(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"])
        for r in json.loads(Path(path).read_text(encoding="utf-8"))
    ]


def trl_rows(pairs: list[BenchPair]) -> list[dict[str, str]]:
    """Standard-format rows for TRL: answers start with a space so `prompt + answer` splits into words."""
    return [{"prompt": p.prompt_text, "chosen": " " + p.chosen_text, "rejected": " " + p.rejected_text} for p in pairs]


def preference_pairs(pairs: list[BenchPair]) -> list[Any]:
    """The same pairs as orpo_kit `PreferencePair`s (one user turn; the chat template adds bos and eos)."""
    from ..data.formats import PreferencePair

    return [
        PreferencePair(
            [{"role": "user", "content": p.prompt_text}], p.chosen_text, p.rejected_text, origin=f"bench pair {i}"
        )
        for i, p in enumerate(pairs)
    ]


# ---- tokenizer and model --------------------------------------------------------------------------------
def build_tokenizer() -> Any:
    """The word-level tokenizer: exactly VOCAB_SIZE entries, bos/eos/pad/unk set, a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{k}": len(SPECIAL_TOKENS) + k for k in range(NUM_WORDS)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )
    assert len(tokenizer) == VOCAB_SIZE and (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    ) == (BOS_ID, EOS_ID, PAD_ID)
    return tokenizer


def model_config(shape: str) -> Any:
    """The MistralConfig of a model shape ("cpu", "tiny" or "mistral-7b"): fp32, no dropout, no sliding window."""
    from transformers import MistralConfig

    common = dict(
        vocab_size=VOCAB_SIZE,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        attention_dropout=0.0,
        use_cache=False,
        tie_word_embeddings=False,
    )
    if shape == "mistral-7b":
        values = json.loads(MISTRAL_7B_CONFIG.read_text(encoding="utf-8"))
        values = {k: v for k, v in values.items() if k not in ("architectures", "model_type")}
        return MistralConfig(**cast(dict[str, Any], {**values, **common, "sliding_window": None}))
    if shape not in MODEL_SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; choose one of {', '.join(MODEL_SHAPES)} or mistral-7b")
    sizes: dict[str, Any] = {**MODEL_SHAPES[shape], **common}
    return MistralConfig(**sizes, max_position_embeddings=4096, sliding_window=None)


def count_params(config: Any) -> dict[str, int]:
    """Parameters of a Mistral config, counted from its shapes (valid for 4-bit models too).

    `flops_params` = everything but the input embedding (a lookup, no matmul): layers, norms and lm_head.
    """
    h, i, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q = config.num_attention_heads * head_dim
    kv = config.num_key_value_heads * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    embed = vocab * h
    body = layers * per_layer + h  # decoder layers and the final norm
    total = embed + body + (0 if config.tie_word_embeddings else vocab * h)
    return {"total_params": total, "embedding_params": embed, "flops_params": body + vocab * h}


def save_model_dir(target: Path, shape: str, seed: int = 0) -> Path:
    """Build the seeded random model and the tokenizer and save both to `target` (fp32 safetensors).

    For "mistral-7b" (GPU only, untested here) the weights are drawn in bf16 on the GPU and saved in bf16:
    workers quantize them to 4-bit when they load them.
    """
    import torch
    from transformers import MistralForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars: noise in the benchmark's output
    target.mkdir(parents=True, exist_ok=True)
    config = model_config(shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if shape == "mistral-7b":
            config.dtype = "bfloat16"
            with torch.device("cuda"):
                default = torch.get_default_dtype()
                torch.set_default_dtype(torch.bfloat16)
                try:
                    torch.cuda.manual_seed(seed)
                    model = MistralForCausalLM(config)
                finally:
                    torch.set_default_dtype(default)
        else:
            model = MistralForCausalLM(config).float()
    model.save_pretrained(target, safe_serialization=True, max_shard_size="5GB")
    build_tokenizer().save_pretrained(target)
    del model
    if shape == "mistral-7b":
        torch.cuda.empty_cache()  # the workers need the GPU, not this process
    return target
