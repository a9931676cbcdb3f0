"""Ctrl-C during training: noted, not raised, while an update or a checkpoint is in progress."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class SigintHold:
    """Hold Ctrl-C during critical blocks (an update); `pending` tells the loop to stop at the next safe point."""

    def __init__(self) -> None:
        self.pending = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Note a SIGINT instead of raising it inside the block (no-op off the main thread or if ignored)."""
        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
            signal.SIG_IGN,
            None,
        ):
            yield
            return
        previous = signal.signal(signal.SIGINT, self._note)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _note(self, signum: int, frame: Any) -> None:
        self.pending = True
