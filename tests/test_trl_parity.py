"""Parity of orpo_kit's ORPO loss with TRL's `trl.experimental.orpo.ORPOTrainer` (TRL 1.16).

What is compared
----------------
With orpo_kit's TRL-compatible NLL switch (`nll_tokens="prompt_and_response"`) and `orpo_lambda == beta`,
the metrics `loss`, `nll_loss`, `log_odds_ratio`, `logps/chosen` and `logps/rejected` (and, as a bonus, the
other metrics both define the same way: `log_odds_chosen`, `rewards/*`, plus `grad_norm` and `learning_rate`
during training) must agree to rtol 1e-5 in fp32 on the tiny Mistral, with identical initial weights.

`logits/chosen` and `logits/rejected` are *not* compared: TRL averages the logits over every position of the
chosen / rejected rows (prompt and padding included), orpo_kit over the completion positions only.

1. `test_step0_parity_on_orpo_kit_token_ids`: orpo_kit's own tokenization of 4 built-in pairs is turned into
   the rows TRL's `tokenize_row` produces (prompt / chosen / rejected ids, masks, labels with -100 on the
   prompt), padded by TRL's own collator (`trainer.data_collator`) and fed to `trainer.get_batch_loss_metrics`.
   orpo_kit gets `PLAIN.collate` of the same pairs and runs `orpo_step`. The test asserts that TRL's
   concatenated input ids and attention mask equal orpo_kit's `PairBatch` exactly, and that TRL's label mask
   (labels != -100) equals orpo_kit's `completion_mask`. It also checks the comparison is not vacuous: with
   the default `nll_tokens="response"`, `nll_loss` and `loss` differ from TRL's.

2. `test_training_parity_with_trl_trainer`: TRL runs its *own* pipeline end to end: conversational rows go
   through `maybe_apply_chat_template` and `tokenize_row` (which appends an EOS after the chat template's
   trailing "<|im_end|>\\n"; the tiny tokenizer has no BOS, so none is added), then `trainer.train()` takes 3
   AdamW steps (linear decay, clipping at 1.0, weight decay on non-norm matrices). The test asserts that TRL's
   tokenized rows are exactly orpo_kit's `tokenize_pairs` ids plus that one EOS per completion, and hands
   those very ids to orpo_kit's `Trainer` (its `train_data`), which takes 3 steps with `Trainer.train_step`
   (its own optimizer, scheduler and clipping, configured like TRL's). Both use the 4 pairs as one batch at
   every step (per-device batch size == data size), so each step sees the same rows, possibly in another
   order; every batch TRL trains on is recorded and checked to hold the same (chosen, rejected) rows as
   orpo_kit's full batch. Compared: the per-step metrics each trainer logs (step 1 is the step-0 model;
   steps 2 and 3 are after 1 and 2 updates), the metrics of both final models (after 3 updates) on the
   identical full batch, and the final weights (tolerance explained at the check). The test asserts the loss
   and the weights really changed.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # before trl.experimental is imported

import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from torch.testing import assert_close  # noqa: E402
from trl.experimental.orpo import ORPOConfig as TRLORPOConfig  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402

from orpo_kit.config import resolve_config  # noqa: E402
from orpo_kit.data import TokenizedPair, load_preference_pairs, tokenize_pairs  # noqa: E402
from orpo_kit.layouts import PLAIN, PairBatch  # noqa: E402
from orpo_kit.models import build_tiny_model, load_tokenizer  # noqa: E402
from orpo_kit.train import Trainer, orpo_step  # noqa: E402

BETA = 0.5  # orpo_kit's orpo_lambda == TRL's beta; not 1.0, so a misplaced factor of lambda would show
N_PAIRS = 4
STEPS = 3
LR = 3e-3  # large enough that 3 steps move the tiny model a lot
WEIGHT_DECAY = 0.01
MODEL_SEED = 0
RTOL, ATOL = 1e-5, 1e-6
PARITY_KEYS = ("loss", "nll_loss", "log_odds_ratio", "logps/chosen", "logps/rejected")
# Metrics TRL and orpo_kit also define identically (logits/* are defined differently; see the module doc).
SAME_DEFINITION_KEYS = (
    "log_odds_chosen",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
)


# ---- shared setup ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cfg():
    return resolve_config(
        "tiny",
        overrides={
            "nll_tokens": "prompt_and_response",
            "orpo_lambda": BETA,
            "device": "cpu",
            "mixed_precision": "no",
            "learning_rate": LR,
            "weight_decay": WEIGHT_DECAY,
            "max_grad_norm": 1.0,
            "lr_scheduler_type": "linear",
            "warmup_steps": 0,
            "warmup_ratio": 0.0,
            "per_device_train_batch_size": N_PAIRS,
            "gradient_accumulation_steps": 1,
            "max_steps": STEPS,
            "seed": 42,
        },
    )


@pytest.fixture(scope="module")
def tokenizer(cfg):
    tok = load_tokenizer(cfg)
    assert tok.bos_token_id is None and tok.eos_token_id == tok.pad_token_id  # what the id bookkeeping assumes
    return tok


@pytest.fixture(scope="module")
def pairs():
    """The first N_PAIRS built-in training pairs: fixed data."""
    train = [p for p in load_preference_pairs("builtin") if p.split == "train"][:N_PAIRS]
    assert len(train) == N_PAIRS
    return train


@pytest.fixture(scope="module")
def eval_pairs():
    return [p for p in load_preference_pairs("builtin") if p.split == "eval"][:2]


def _fresh_model(cfg):
    model = build_tiny_model(cfg.model_config_overrides, seed=MODEL_SEED)
    model.config.use_cache = False
    return model.float()


def _trl_trainer(model, tokenizer, pairs, output_dir, trainer_cls=ORPOTrainer, **overrides):
    """TRL's ORPOTrainer on conversational rows of `pairs`, fp32 on CPU, optimisation configured like orpo_kit."""
    rows = [
        {
            "prompt": [{"role": "user", "content": p.prompt}],
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]
    args = TRLORPOConfig(
        **{
            "output_dir": str(output_dir),
            "beta": BETA,
            "max_length": 192,
            "bf16": False,
            "fp16": False,
            "gradient_checkpointing": False,
            "use_cpu": True,
            "report_to": "none",
            "save_strategy": "no",
            "per_device_train_batch_size": N_PAIRS,
            "gradient_accumulation_steps": 1,
            "max_steps": STEPS,
            "logging_steps": 1,
            "learning_rate": LR,
            "lr_scheduler_type": "linear",
            "warmup_steps": 0,
            "weight_decay": WEIGHT_DECAY,
            "adam_beta1": 0.9,
            "adam_beta2": 0.999,
            "adam_epsilon": 1e-8,
            "max_grad_norm": 1.0,
            "optim": "adamw_torch",
            "seed": 42,
            "disable_tqdm": True,
            "dataloader_drop_last": False,
            **overrides,
        }
    )
    return trainer_cls(
        model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer
    )


def _trl_features(pair: TokenizedPair) -> dict[str, list[int]]:
    """One row exactly as TRL's `tokenize_row` lays it out (labels are -100 on the prompt)."""
    prompt = list(pair.prompt_ids)
    out = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for name, completion in (("chosen", pair.chosen_ids), ("rejected", pair.rejected_ids)):
        ids = prompt + list(completion)
        out[f"{name}_input_ids"] = ids
        out[f"{name}_attention_mask"] = [1] * len(ids)
        out[f"{name}_labels"] = [-100] * len(prompt) + list(completion)
    return out


def _trl_concatenated(trainer: ORPOTrainer, batch: dict) -> dict[str, torch.Tensor]:
    """What TRL's concatenated_forward feeds the model: [chosen rows; rejected rows], padded to one width."""
    return ORPOTrainer.concatenated_inputs(
        batch, is_encoder_decoder=False, padding_value=trainer.padding_value, device=torch.device("cpu")
    )


def _assert_identical_inputs(trl_concat: dict[str, torch.Tensor], ok_batch: PairBatch) -> None:
    """The model sees the same tensors on both sides, and both score the same completion positions."""
    torch.testing.assert_close(trl_concat["concatenated_input_ids"], ok_batch.input_ids, rtol=0, atol=0)
    torch.testing.assert_close(trl_concat["concatenated_attention_mask"], ok_batch.attention_mask, rtol=0, atol=0)
    torch.testing.assert_close(
        (trl_concat["concatenated_labels"] != -100).long(), ok_batch.completion_mask, rtol=0, atol=0
    )
    labels = trl_concat["concatenated_labels"]
    torch.testing.assert_close(
        labels[labels != -100], ok_batch.input_ids[ok_batch.completion_mask.bool()], rtol=0, atol=0
    )


def _pair_rows(input_ids: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(chosen row, rejected row) per pair, sorted: a batch's content independent of its pair order."""
    n = input_ids.shape[0] // 2
    return sorted((tuple(input_ids[i].tolist()), tuple(input_ids[n + i].tolist())) for i in range(n))


def _assert_metrics_match(ok: dict, trl: dict, keys, where: str) -> None:
    for key in keys:
        got = torch.as_tensor(float(ok[key]), dtype=torch.float64)
        want = torch.as_tensor(float(trl[key]), dtype=torch.float64)
        assert_close(got, want, rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{where}, {k}: {m}")


def _params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- step 0, on orpo_kit's own token ids ------------------------------------------------------------------
def test_step0_parity_on_orpo_kit_token_ids(cfg, tokenizer, pairs, tmp_path):
    tokenized = tokenize_pairs(tokenizer, pairs, cfg.max_length, cfg.max_prompt_length)
    ok_model = _fresh_model(cfg).eval()
    trainer = _trl_trainer(copy.deepcopy(ok_model), tokenizer, pairs, tmp_path / "trl")
    trl_model = trainer.model.eval()
    assert _params_equal(ok_model, trl_model)

    ok_batch = PLAIN.collate(tokenized, tokenizer.pad_token_id)
    trl_batch = trainer.data_collator([_trl_features(p) for p in tokenized])
    _assert_identical_inputs(_trl_concatenated(trainer, trl_batch), ok_batch)

    with torch.no_grad():
        trl_loss, trl_metrics = trainer.get_batch_loss_metrics(trl_model, trl_batch, train_eval="train")
        ok_loss, ok_metrics = orpo_step(ok_model, ok_batch, cfg)
        _, response_metrics = orpo_step(ok_model, ok_batch, cfg.replace(nll_tokens="response"))
    trl_metrics = {**trl_metrics, "loss": trl_loss.item()}
    _assert_metrics_match(ok_metrics, trl_metrics, PARITY_KEYS + SAME_DEFINITION_KEYS, "step 0")
    assert_close(ok_loss, trl_loss, rtol=RTOL, atol=ATOL)

    # Not vacuous: the paper's NLL (completion tokens only) is a different number on the same batch,
    # while the log-probs (completion tokens under both settings) still agree.
    _assert_metrics_match(response_metrics, trl_metrics, ("logps/chosen", "logps/rejected"), "response NLL")
    for key in ("nll_loss", "loss"):
        with pytest.raises(AssertionError):
            _assert_metrics_match(response_metrics, trl_metrics, (key,), "response NLL")


# ---- after optimizer steps: TRL's own train() against orpo_kit's Trainer ---------------------------------------
class _RecordingORPOTrainer(ORPOTrainer):
    """TRL's trainer, unchanged, except that it keeps a copy of every batch it computes a loss on."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.seen_batches = getattr(self, "seen_batches", [])
        self.seen_batches.append(
            {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        )
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)


def test_training_parity_with_trl_trainer(cfg, tokenizer, pairs, eval_pairs, tmp_path):
    ok_model, trl_model = _fresh_model(cfg), _fresh_model(cfg)
    assert _params_equal(ok_model, trl_model)
    initial = copy.deepcopy(ok_model)
    trl_trainer = _trl_trainer(trl_model, tokenizer, pairs, tmp_path / "trl", trainer_cls=_RecordingORPOTrainer)

    # TRL tokenized the rows itself; they are orpo_kit's ids plus the EOS TRL appends to each completion.
    eos = tokenizer.eos_token_id
    native = tokenize_pairs(tokenizer, pairs, cfg.max_length, cfg.max_prompt_length)
    shared = []
    for row, mine in zip(trl_trainer.train_dataset, native, strict=True):
        n = len(row["prompt_input_ids"])
        assert row["prompt_input_ids"] == mine.prompt_ids
        assert row["chosen_input_ids"] == mine.prompt_ids + mine.chosen_ids + [eos]
        assert row["rejected_input_ids"] == mine.prompt_ids + mine.rejected_ids + [eos]
        assert row["chosen_labels"] == [-100] * n + mine.chosen_ids + [eos]
        assert row["rejected_labels"] == [-100] * n + mine.rejected_ids + [eos]
        shared.append(
            TokenizedPair(
                row["prompt_input_ids"], row["chosen_input_ids"][n:], row["rejected_input_ids"][n:], origin=mine.origin
            )
        )

    ok_trainer = Trainer(
        cfg.replace(output_dir=str(tmp_path / "orpo_kit")),
        model=ok_model,
        tokenizer=tokenizer,
        train_pairs=pairs,
        eval_pairs=eval_pairs,
    )
    ok_trainer.train_data = shared  # the very ids TRL trains on
    for step in range(STEPS):  # every step trains on all pairs, as TRL's does
        assert [sorted(m) for m in ok_trainer.micro_batches(step)] == [list(range(N_PAIRS))]

    full_batch = PLAIN.collate(shared, tokenizer.pad_token_id)
    full_trl_batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(N_PAIRS)])
    _assert_identical_inputs(_trl_concatenated(trl_trainer, full_trl_batch), full_batch)

    ok_records = [ok_trainer.train_step() for _ in range(STEPS)]
    trl_trainer.train()

    trl_records = [r for r in trl_trainer.state.log_history if "loss" in r and "train_loss" not in r]
    assert [r["step"] for r in trl_records] == list(range(1, STEPS + 1))
    assert len(trl_trainer.seen_batches) == STEPS
    for seen in trl_trainer.seen_batches:
        concat = _trl_concatenated(trl_trainer, seen)
        assert _pair_rows(concat["concatenated_input_ids"]) == _pair_rows(full_batch.input_ids)

    for step, (ok, trl) in enumerate(zip(ok_records, trl_records, strict=True), start=1):
        _assert_metrics_match(
            ok, trl, PARITY_KEYS + SAME_DEFINITION_KEYS + ("grad_norm", "learning_rate"), f"train step {step}"
        )

    # The final models (after STEPS updates) on the identical full batch.
    ok_final, trl_final = ok_trainer.accelerator.unwrap_model(ok_trainer.model).eval(), trl_trainer.model.eval()
    with torch.no_grad():
        ok_loss, ok_metrics = orpo_step(ok_final, full_batch, cfg)
        trl_loss, trl_metrics = trl_trainer.get_batch_loss_metrics(trl_final, full_trl_batch, train_eval="train")
        _, start_metrics = orpo_step(initial.eval(), full_batch, cfg)
    _assert_metrics_match(
        ok_metrics, {**trl_metrics, "loss": trl_loss.item()}, PARITY_KEYS + SAME_DEFINITION_KEYS, f"after {STEPS} steps"
    )

    # The steps did something: the loss fell clearly and the weights moved, on both sides alike.
    assert ok_metrics["loss"].item() < start_metrics["loss"].item() - 0.5
    assert trl_records[-1]["loss"] < trl_records[0]["loss"] - 0.5
    assert not _params_equal(ok_final, initial)
    # Final weights. Each parameter's total update agrees to 1e-4 relative (Frobenius norm). Elementwise, AdamW
    # turns a gradient g into about lr * g / (|g| + eps): where |g| is near eps = 1e-8 (the gradient of a
    # weight is a sum of cancelling terms), fp32 round-off that differs between the two implementations moves
    # that weight by up to a fraction of lr, so elements get an absolute slack of 5% of one step (lr).
    ok_state, trl_state, init_state = ok_final.state_dict(), trl_final.state_dict(), initial.state_dict()
    assert ok_state.keys() == trl_state.keys()
    for name in ok_state:
        ok_update, trl_update = ok_state[name] - init_state[name], trl_state[name] - init_state[name]
        rel = ((ok_update - trl_update).norm() / trl_update.norm()).item()
        assert rel < 1e-4, f"{name}: the updates differ by {rel:.2e} (relative norm)"
        assert_close(ok_state[name], trl_state[name], rtol=1e-4, atol=0.05 * LR, msg=lambda m, n=name: f"{n}: {m}")
