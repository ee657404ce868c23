"""Work a run must undo before it ends, whatever happens (models it deployed cost money)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class RunCleanup:
    """Undo actions keyed by what they undo; run last-in first-out when the run ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._actions: dict[str, tuple[str, Callable[[], None]]] = {}

    def add(self, key: str, description: str, action: Callable[[], None]) -> None:
        """Register (or replace) the action that undoes `key`."""
        with self._lock:
            self._actions.pop(key, None)
            self._actions[key] = (description, action)

    def discard(self, key: str) -> None:
        """Forget `key`: it was undone explicitly (e.g. delete_model)."""
        with self._lock:
            self._actions.pop(key, None)

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._actions)

    def run_all(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> list[str]:
        """Run every pending action, newest first; a failing one is logged and the rest still run.

        Returns the messages of the actions that failed.
        """
        with self._lock:
            actions = list(self._actions.items())[::-1]
            self._actions.clear()
        failures = []
        for key, (description, action) in actions:
            log.info(f"clean-up: {description}")
            try:
                action()
            except Exception as exc:  # one failing clean-up must not stop the others
                failures.append(f"{key}: {exc}")
                log.error(f"clean-up failed: {description}: {exc}")
        return failures
