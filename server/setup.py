"""The compiled hot path (`wsecho._engine`), built with the system compiler and Python's headers.

Everything else about the package is in pyproject.toml. WSECHO_PURE=1 builds without the
extension (a pure-Python package, for a Python without a compiler or headers); wsecho then runs
its Python hot path (`wsecho --hot-path auto` says so at start).
"""

import os
import sys

from setuptools import Extension, setup

PURE = os.environ.get("WSECHO_PURE", "") not in ("", "0")
extensions = []
if not PURE and sys.platform.startswith("linux"):
    extensions.append(
        Extension(
            "wsecho._engine",
            sources=["src/wsecho/_engine.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    )

setup(ext_modules=extensions)
