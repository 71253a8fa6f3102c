"""Unmasking of client frames (RFC 6455 5.3): websockets' C function, or pure Python.

websockets (a dependency of wsecho) ships `apply_mask` as a small C extension. Importing it the
usual way (`from websockets.speedups import apply_mask`) first runs `websockets/__init__.py`, which
imports `importlib.metadata` and with it `email`, `zipfile`, `tempfile`...: ~3.4 MB of resident
memory for one function. So the extension module is loaded on its own, from the package's folder,
without executing the package. When it is missing (websockets built without its C extension), the
pure-Python fallback XORs the payload as one big integer (~3x slower; still correct).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path

Unmask = Callable[[bytes | bytearray, bytes | bytearray], bytes]


def python_apply_mask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR `data` with the 4-byte `mask` repeated (one integer operation, no Python loop)."""
    size = len(data)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def load_c_apply_mask() -> Unmask | None:
    """websockets' `speedups.apply_mask`, without running the websockets package; None if absent."""
    try:
        spec = importlib.util.find_spec("websockets")  # finds the package, does not run it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder, "speedups" + suffix)
            if not path.is_file():
                continue
            ext_spec = importlib.util.spec_from_file_location("websockets.speedups", path)
            if ext_spec is None or ext_spec.loader is None:
                continue
            try:
                module = importlib.util.module_from_spec(ext_spec)
                ext_spec.loader.exec_module(module)
            except ImportError:  # built for another interpreter: try the next suffix
                continue
            apply_mask: Unmask = module.apply_mask
            return apply_mask
    return None


apply_mask: Unmask = load_c_apply_mask() or python_apply_mask
