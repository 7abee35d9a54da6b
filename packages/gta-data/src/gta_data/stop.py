"""Graceful stop of a training command on Ctrl-C (SIGINT) or SIGTERM (job schedulers, torchrun, ``kill``).

While :class:`StopSignals` is active, the first SIGINT or SIGTERM only records the signal; the training loop
asks :meth:`StopSignals.requested` after every step, writes a checkpoint at that step boundary (atomically,
like every checkpoint) and returns, and the command exits with code 128 + the signal number. A second
signal stops at once (``KeyboardInterrupt``), leaving the last complete checkpoint. Outside the main thread
(where Python cannot install handlers) nothing is installed and signals keep their default effect.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class StopSignals:
    """Context manager that turns SIGINT and SIGTERM into a stop request."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal number seen
        self._previous: dict[int, Any] = {}

    def requested(self) -> bool:
        return self.received is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + int(self.received or 0)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without a checkpoint")
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
