"""Which hot path serves the picows backend's established connections.

- compiled: `wsecho._engine`, a C extension built with the package (server/setup.py). It holds
  every connection that has nothing pending and echoes its frames from one epoll descriptor;
  whatever is not a small whole text or binary frame hands the connection to the Python path.
- python: the lean path (`wsecho.lean`) serves every connection on an event-loop transport.
- auto: compiled when `wsecho._engine` can be imported (a package built without a compiler, or
  for another Python, has none), else python.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from wsecho.config import ConfigError, Settings


@dataclasses.dataclass(frozen=True)
class HotPath:
    """The chosen hot path, the engine module when it is the compiled one, and why."""

    name: str  # "compiled" or "python"
    why: str
    engine: ModuleType | None = None


def import_engine() -> tuple[ModuleType | None, str]:
    """`wsecho._engine`, or None and why it cannot be imported."""
    try:
        return importlib.import_module("wsecho._engine"), ""
    except ImportError as exc:
        return None, str(exc)


def choose(settings: Settings) -> HotPath:
    """The hot path `settings` asks for. Raises ConfigError for --hot-path compiled without
    the engine."""
    if settings.backend != "picows":
        return HotPath("python", f"the {settings.backend} backend has no compiled hot path")
    if settings.hot_path == "python":
        return HotPath("python", "--hot-path python")
    engine, problem = import_engine()
    if engine is not None:
        return HotPath("compiled", f"--hot-path {settings.hot_path}", engine)
    if settings.hot_path == "compiled":
        raise ConfigError(
            f"--hot-path compiled: the engine (wsecho._engine) cannot be imported: {problem} "
            "(reinstall wsecho with a C compiler and Python's headers, or use --hot-path python)"
        )
    return HotPath("python", f"wsecho._engine cannot be imported: {problem}")
