"""How much memory ORPO training needs: an estimator (full / LoRA / QLoRA) and a measurement to check it.

- `shapes`: a model's sizes and parameter counts from its config (no weights);
- `activations`: what one decoder layer saves for backward, per token;
- `parameters`: weights as stored, trainable parameters, gradients and optimizer state;
- `estimate`: `estimate_memory(cfg)`, one function per component of the peak;
- `calibration`: the measured allocator factors and block counts (how they were measured: docs/memory.md);
- `report`: the table and assumptions people read, and `orpo-kit estimate`;
- `measure`: peak RSS of real training steps in a fresh process, to check the estimate against.
"""

from .activations import layer_activation_bytes
from .calibration import CALIBRATION, GiB, MiB
from .estimate import estimate_memory, uses_chunked_logps, uses_prefix_sharing
from .measure import measure_training_peak, synthetic_estimate_kwargs, synthetic_pairs, synthetic_row_len
from .report import MemoryEstimate, estimate_command, format_bytes, format_count
from .shapes import ModelShape, count_parameters, lora_parameters, lora_targets, mistral_7b_config, model_config_for

__all__ = [
    "CALIBRATION",
    "GiB",
    "MemoryEstimate",
    "MiB",
    "ModelShape",
    "count_parameters",
    "estimate_command",
    "estimate_memory",
    "format_bytes",
    "format_count",
    "layer_activation_bytes",
    "lora_parameters",
    "lora_targets",
    "measure_training_peak",
    "mistral_7b_config",
    "model_config_for",
    "synthetic_estimate_kwargs",
    "synthetic_pairs",
    "synthetic_row_len",
    "uses_chunked_logps",
    "uses_prefix_sharing",
]
