"""The environment check lines and the fit verdict behind notebook 00's widget."""

from __future__ import annotations

from orpo_kit.envcheck import environment_checks, estimate_fit_text, fits_verdict


def test_checks_are_status_message_pairs(tmp_path) -> None:
    checks = environment_checks(tmp_path / "runs")
    assert checks and all(status in ("OK", "FAIL", "INFO") for status, _ in checks)
    assert any("torch" in message for _, message in checks)


def test_fit_verdict_uses_a_margin() -> None:
    assert fits_verdict(10 * 2**30, 24).startswith("[OK]")
    assert fits_verdict(23 * 2**30, 24).startswith("[FAIL]")  # 23 GiB + 10% margin does not fit 24 GiB


def test_estimate_fit_text_grows_with_length() -> None:
    short = estimate_fit_text("mistral-7b-qlora", 512, 2, True, 24)
    long = estimate_fit_text("mistral-7b-qlora", 4096, 8, False, 24)
    assert short.startswith("[OK]") and long.startswith("[FAIL]")
