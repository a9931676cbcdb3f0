"""Model loading: a base model without a chat template gets ChatML, grown embeddings and trainable new rows.

Acceptance: "tokens added, embeddings resized, the new rows receive gradient and change after a step". The base
model here is built in the test: a tiny byte-level BPE tokenizer (no chat template, no ChatML tokens) and a tiny
Mistral whose vocabulary is exactly that tokenizer's, both saved to disk and loaded back through orpo_kit's own
`load_tokenizer` / `load_model`, as a user's local base model would be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orpo_kit.config import resolve_config
from orpo_kit.data import load_pairs, tokenize_pairs
from orpo_kit.layouts import PLAIN
from orpo_kit.models.chat_template import CHATML, CHATML_TOKENS, ensure_chat_template, trainable_token_targets
from orpo_kit.models.load import build_tiny_model, load_model, load_tokenizer
from orpo_kit.train import build_optimizer, orpo_step

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Answer the question in one short sentence, please.",
    "Water boils at one hundred degrees at sea level.",
    "Write a haiku about autumn leaves and rain.",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def base_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(model dir, tokenizer dir, vocab size) of a base model without a chat template or ChatML tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("base")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>")
    assert not tokenizer.chat_template and tokenizer.pad_token is None
    assert all(t not in tokenizer.get_vocab() for t in CHATML_TOKENS)
    tokenizer.save_pretrained(root / "tokenizer")
    vocab = len(tokenizer)
    assert vocab % 64 != 0  # so growing "to a multiple of 64" is visible
    build_tiny_model({"vocab_size": vocab}, seed=0).save_pretrained(root / "model")
    return root / "model", root / "tokenizer", vocab


def _cfg(dirs: tuple[Path, Path, int], **overrides):
    model_dir, tok_dir, _ = dirs
    return resolve_config(
        "tiny",
        overrides={
            "model_name_or_path": str(model_dir),
            "tokenizer_name_or_path": str(tok_dir),
            "use_lora": True,
            "lora_r": 4,
            "lora_alpha": 8,
            "learning_rate": 1e-2,
            "orpo_lambda": 1.0,
            **overrides,
        },
    )


def _embed_rows(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """What the (possibly wrapped) input embedding returns for these token ids."""
    with torch.no_grad():
        return model.get_input_embeddings()(torch.tensor([ids])).squeeze(0).clone()


def _head_rows(model: torch.nn.Module, ids: list[int], probe: torch.Tensor) -> torch.Tensor:
    """Logits of these token ids for fixed hidden states: a function of exactly their lm_head rows."""
    with torch.no_grad():
        return model.get_output_embeddings()(probe)[:, ids].clone()


def test_base_model_gets_chatml_and_trainable_new_token_rows(base_model_dirs) -> None:
    _, _, vocab = base_model_dirs
    cfg = _cfg(base_model_dirs)
    tokenizer = load_tokenizer(cfg)

    # Tokenizer: ChatML template and its two special tokens, generation ends at the end of the turn.
    assert tokenizer.chat_template == CHATML
    new_ids = tokenizer.convert_tokens_to_ids(list(CHATML_TOKENS))
    assert sorted(new_ids) == [vocab, vocab + 1] and len(tokenizer) == vocab + 2
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True, return_dict=True)
    assert ids["input_ids"][0] == new_ids[0] and new_ids[1] in ids["input_ids"]  # single special tokens

    # Model: embeddings grown to a multiple of 64; LoRA plus trainable rows for exactly the new tokens.
    model = load_model(cfg, tokenizer)
    inner = model.get_base_model()
    for module in (inner.model.embed_tokens, inner.lm_head):
        assert hasattr(module, "token_adapter"), f"no trainable new-token rows on {type(module).__name__}"
    rows = inner.model.embed_tokens.token_adapter.base_layer.weight.shape[0]
    head_rows = inner.lm_head.token_adapter.base_layer.weight.shape[0]
    assert rows == head_rows and rows % 64 == 0 and rows >= len(tokenizer) > vocab
    assert inner.config.eos_token_id == tokenizer.eos_token_id
    assert inner.generation_config.eos_token_id == tokenizer.eos_token_id
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    token_params = {n: p for n, p in trainable.items() if "trainable_tokens_delta" in n}
    assert sorted(n.split(".token_adapter")[0].rsplit(".", 1)[-1] for n in token_params) == ["embed_tokens", "lm_head"]
    assert all(p.shape == (2, inner.config.hidden_size) for p in token_params.values())
    assert all("lora_" in n for n in trainable if n not in token_params)
    assert not any(
        p.requires_grad
        for n, p in model.named_parameters()
        if n.endswith("base_layer.weight") and ("embed_tokens" in n or "lm_head" in n)
    )

    # One ORPO step on a few built-in pairs through the ChatML template.
    pairs, _ = load_pairs("builtin")
    items = tokenize_pairs(tokenizer, pairs[:4], max_length=160, max_prompt_length=96)
    batch = PLAIN.collate(items, tokenizer.pad_token_id)
    assert set(new_ids) <= set(batch.input_ids[batch.attention_mask.bool()].tolist())

    old_ids = [0, 5, 100, vocab - 1]
    probe = torch.randn(3, inner.config.hidden_size, generator=torch.Generator().manual_seed(0))
    before = (
        _embed_rows(model, new_ids),
        _embed_rows(model, old_ids),
        _head_rows(model, new_ids, probe),
        _head_rows(model, old_ids, probe),
    )

    model.train()
    optimizer = build_optimizer(model, cfg)
    loss, _ = orpo_step(model, batch, cfg)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in token_params.items():
        assert p.grad is not None, name
        assert (p.grad.abs().sum(dim=1) > 0).all(), f"a new token row of {name} got no gradient"
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    after = (
        _embed_rows(model, new_ids),
        _embed_rows(model, old_ids),
        _head_rows(model, new_ids, probe),
        _head_rows(model, old_ids, probe),
    )
    assert ((after[0] - before[0]).abs().amax(dim=1) > 1e-4).all(), "new input-embedding rows did not change"
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)  # old rows stay frozen
    assert ((after[2] - before[2]).abs().amax(dim=0) > 1e-4).all(), "new lm_head rows did not change"
    torch.testing.assert_close(after[3], before[3], rtol=0, atol=0)

    # Merging keeps the trained rows: full weights give the same logits as the adapter model.
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        merged = model.merge_and_unload()
        assert merged.get_input_embeddings().weight.shape[0] == rows
        torch.testing.assert_close(
            merged(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, adapted, rtol=0, atol=1e-5
        )


def test_base_model_with_spare_embedding_rows_still_trains_the_chatml_rows(base_model_dirs, tmp_path: Path) -> None:
    _, tok_dir, vocab = base_model_dirs
    padded = -(-(vocab + 2) // 64) * 64  # room for the ChatML tokens already there, as in many released models
    build_tiny_model({"vocab_size": padded}, seed=0).save_pretrained(tmp_path / "padded")
    cfg = _cfg(base_model_dirs, model_name_or_path=str(tmp_path / "padded"))
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer)
    inner = model.get_base_model()
    assert inner.get_input_embeddings().weight.shape[0] == padded  # nothing to grow
    new_ids = tokenizer.convert_tokens_to_ids(list(CHATML_TOKENS))
    assert inner.config.eos_token_id == tokenizer.eos_token_id == new_ids[1], "model eos is not <|im_end|>"
    for module in (inner.model.embed_tokens, inner.lm_head):
        adapter = getattr(module, "token_adapter", None)
        assert adapter is not None, f"the ChatML rows of {type(module).__name__} are frozen"
        assert sorted(adapter.token_indices["default"]) == sorted(new_ids)


def test_tokenizer_with_a_chat_template_is_left_alone() -> None:
    tokenizer = load_tokenizer(resolve_config("tiny"))
    template, size, eos = tokenizer.chat_template, len(tokenizer), tokenizer.eos_token
    assert template and all(t in tokenizer.get_vocab() for t in CHATML_TOKENS)
    assert ensure_chat_template(tokenizer) == []
    assert (tokenizer.chat_template, len(tokenizer), tokenizer.eos_token) == (template, size, eos)
    model = load_model(resolve_config("tiny", overrides={"use_lora": True}), tokenizer)
    assert model.get_base_model().get_input_embeddings().weight.shape[0] == 1024  # not resized
    assert not any("trainable_tokens" in n for n, _ in model.named_parameters())
    assert trainable_token_targets(model.get_base_model(), []) is None


def test_tiny_in_4bit_with_lora_loads() -> None:
    pytest.importorskip("bitsandbytes", reason='4-bit loading needs bitsandbytes: pip install "orpo_kit[qlora]"')
    from bitsandbytes.nn import Linear4bit

    cfg = resolve_config("tiny", overrides={"load_in_4bit": True, "use_lora": True, "lora_r": 4})
    model = load_model(cfg, load_tokenizer(cfg))
    layers = [n for n, m in model.named_modules() if isinstance(m, Linear4bit)]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    assert any("lora_A" in n for n, p in model.named_parameters() if p.requires_grad)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_4bit_without_lora_is_a_clear_error() -> None:
    cfg = resolve_config("tiny", overrides={"load_in_4bit": True, "use_lora": False})
    with pytest.raises(ValueError, match="use_lora"):
        load_model(cfg, load_tokenizer(cfg))
