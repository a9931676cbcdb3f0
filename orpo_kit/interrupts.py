"""Stopping a run from outside: Ctrl-C, and the SIGTERM / SIGHUP that Docker, SLURM, systemd, `timeout` and a
closed terminal send. Each is noted, not raised, while an update or a checkpoint is in progress; the loop then
stops at the next safe point, saves and returns, and the command exits with the conventional 128 + signal."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """A stop request by signal; a KeyboardInterrupt, so every Ctrl-C path handles it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(signum: int) -> str:
    """SIGTERM, SIGHUP, SIGINT."""
    return signal.Signals(signum).name


class SigintHold:
    """Hold stop signals during critical blocks (an update, a save); `pending` tells the loop to stop next."""

    def __init__(self) -> None:
        self.pending: int | None = None  # the signal number held back
        self._holding = False

    @staticmethod
    def _can_install(signum: int) -> bool:
        """Only the main thread may set handlers; a signal the user chose to ignore stays ignored."""
        return threading.current_thread() is threading.main_thread() and signal.getsignal(signum) not in (
            signal.SIG_IGN,
            None,
        )

    @contextlib.contextmanager
    def stop_signals(self) -> Iterator[None]:
        """For a whole training run: SIGTERM and SIGHUP stop it like Ctrl-C instead of killing it unsaved."""
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS if self._can_install(s)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Note a stop signal instead of raising it inside the block (no-op off the main thread)."""
        previous = signal.signal(signal.SIGINT, self._on_signal) if self._can_install(signal.SIGINT) else None
        outer, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = outer
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def raise_if_pending(self) -> None:
        """Stop now, at a safe point, if a signal came during a held block."""
        if self.pending is not None:
            raise Stopped(self.pending)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._holding:
            self.pending = signum
            return
        raise Stopped(signum)
