"""picows' server-side core, imported without `picows/__init__.py`.

`import picows` also imports its client API (`picows.api`), its SOCKS proxy support
(`python_socks`) and `aiofastnet` (a TLS transport library): ~3 MB of resident memory that an
echo server never uses, a tenth of the 60 MB budget for 10,000 connections. The server needs only
the Cython module `picows.picows` and the pure-Python `picows.common`, so they are imported under
a stand-in parent package that is removed again right after: a later `import picows` elsewhere in
the process runs the real `__init__.py` and reuses the two modules already loaded.

picows also asks, at every new connection, whether its transport is an aiofastnet one, by
importing `aiofastnet` (~1.4 MB more, loaded by the first client). wsecho's transports are always
the event loop's own, so while the server runs that import is blocked (`block_aiofastnet()`:
`sys.modules["aiofastnet"] = None`, the documented way) and picows' check fails fast (a few
microseconds) with the right answer, False.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator


def _import_core() -> None:
    if "picows.picows" in sys.modules:
        return
    spec = importlib.util.find_spec("picows")  # finds the package without running it
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("picows is not installed (pip install picows)")
    stand_in = "picows" not in sys.modules
    if stand_in:
        sys.modules["picows"] = importlib.util.module_from_spec(spec)  # __path__, not executed
    try:
        importlib.import_module("picows.common")
        importlib.import_module("picows.picows")
    finally:
        if stand_in:
            del sys.modules["picows"]


@contextlib.contextmanager
def block_aiofastnet() -> Iterator[None]:
    """While the server runs: `import aiofastnet` fails (unless it was imported before)."""
    blocked = "aiofastnet" not in sys.modules
    if blocked:
        sys.modules["aiofastnet"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if blocked and sys.modules.get("aiofastnet", ...) is None:
            del sys.modules["aiofastnet"]


_import_core()

from picows.common import (  # noqa: E402
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import (  # type: ignore[attr-defined]  # noqa: E402
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocol,
    WSTransport,
)

__all__ = [
    "WSAutoPingStrategy",
    "WSCloseCode",
    "WSFrame",
    "WSListener",
    "WSMsgType",
    "WSProtocol",
    "WSTransport",
    "WSUpgradeRequest",
    "WSUpgradeResponse",
    "WSUpgradeResponseWithListener",
    "block_aiofastnet",
]
