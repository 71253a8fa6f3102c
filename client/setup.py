"""The compiled closed loop (`wsswarm._engine`), built with the system compiler and Python headers.

Everything else about the package is in pyproject.toml. WSSWARM_PURE=1 builds without the
extension (a pure-Python package, for a Python without a compiler or headers); wsswarm then runs
its Python hot path (`wsswarm run --hot-path auto` says so at start).
"""

import os
import sys

from setuptools import Extension, setup

PURE = os.environ.get("WSSWARM_PURE", "") not in ("", "0")
extensions = []
if not PURE and sys.platform.startswith("linux"):
    extensions.append(
        Extension(
            "wsswarm._engine",
            sources=["src/wsswarm/_engine.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    )

setup(ext_modules=extensions)
