"""Which closed-loop hot path the workers run: the compiled engine or the Python protocol.

`compiled` is `wsswarm._engine` (built from `_engine.c` when the package is installed with a
compiler; `WSSWARM_PURE=1` leaves it out): it reads, checks, times and answers the echoes of the
default closed loop in C and hands anything else back to the Python protocol. `python` is that
protocol alone (`connections.ClosedConn`). --compat and the open loop always run in Python.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CHOICES = ("auto", "compiled", "python")


def load_engine() -> tuple[ModuleType | None, str]:
    """The compiled module, or None and why it cannot be imported."""
    try:
        return importlib.import_module("wsswarm._engine"), ""
    except ImportError as exc:
        return None, str(exc)


def resolve(choice: str, *, mode: str, compat: bool) -> tuple[str, str]:
    """The hot path a run gets for `choice` ("compiled" or "python") and a line saying so.

    Raises ValueError for `compiled` when the engine is missing or the run cannot use it.
    """
    if choice not in CHOICES:
        raise ValueError(f"unknown hot path {choice!r}: one of {', '.join(CHOICES)}")
    if compat or mode != "closed":
        why = "--compat" if compat else f"--mode {mode}"
        if choice == "compiled":
            raise ValueError(f"--hot-path compiled runs the default closed loop, not {why}")
        return "python", f"hot path: python ({why} runs in Python)"
    if choice == "python":
        return "python", "hot path: python (--hot-path python)"
    module, error = load_engine()
    if module is None:
        if choice == "compiled":
            raise ValueError(f"--hot-path compiled: wsswarm._engine is not importable: {error}")
        return "python", f"hot path: python (wsswarm._engine not importable: {error})"
    return "compiled", "hot path: compiled (wsswarm._engine)"
