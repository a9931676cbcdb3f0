"""Model and tokenizer loading."""

from .load import TINY, apply_lora, build_tiny_model, load_model, load_tokenizer, tiny_tokenizer_dir

__all__ = ["TINY", "apply_lora", "build_tiny_model", "load_model", "load_tokenizer", "tiny_tokenizer_dir"]
