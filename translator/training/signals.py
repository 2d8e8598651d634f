"""Stopping a run cleanly: the first Ctrl-C or SIGTERM asks the loop to save and stop after the
step it is in; a second Ctrl-C aborts at once.

    with StopOnSignal() as stop:
        while not stop.received: ...
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("translator")


class StopOnSignal:
    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict = {}

    def _request(self, signum, frame) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum)
        log.warning("%s received: saving a checkpoint after this step", self.received.name)

    def __enter__(self) -> StopOnSignal:
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._request)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
