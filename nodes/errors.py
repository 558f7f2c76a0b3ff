"""The two errors RLG raises. Plain Python: every module of the pack may import it."""

from __future__ import annotations


class RLGInputError(ValueError):
    """A user input RLG cannot work with; the message names the input and the fix."""


class RLGRuntimeError(RuntimeError):
    """RLG could not compute a step exactly on this host; the message says why and what to do."""
