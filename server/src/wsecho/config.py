"""Settings of the service: command-line flags, each with a WSECHO_* environment equivalent."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence

from wsecho import __version__

BACKENDS = ("picows", "websockets")
# The picows backend's hot path: the compiled engine (wsecho._engine), the Python lean path, or
# the compiled one when it can be imported (wsecho.hotpath).
HOT_PATHS = ("auto", "compiled", "python")
MAX_WORKERS = 64
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

_SIZE_UNITS = {
    "": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
# A run token goes into an HTTP header as it is: letters, digits and a few safe marks.
RUN_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")


class ConfigError(ValueError):
    """An invalid setting; its message is the one line shown to the user."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the service needs to know; validated, immutable."""

    host: str = "0.0.0.0"  # a service: listening on all interfaces is the point
    port: int = 8080
    backend: str = "picows"
    # Limits
    max_message_size: int = 1024 * 1024
    max_connections: int = 50_000
    # Timeouts
    handshake_timeout: float = 10.0
    # Logging
    log_level: str = "info"
    log_format: str = "text"
    # Identity of the run this service belongs to, sent with every /healthz answer.
    run_token: str | None = None
    # Processes serving the port (SO_REUSEPORT), each with its own event loop.
    workers: int = 1
    # Or a file holding it, read at each /healthz: a deployment can change the token while the
    # service runs (a missing file or an invalid token there: no header).
    run_token_file: str | None = None
    # The picows backend's hot path (HOT_PATHS).
    hot_path: str = "auto"

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.hot_path not in HOT_PATHS:
            raise ConfigError(
                f"hot-path must be one of {', '.join(HOT_PATHS)}, got {self.hot_path!r}"
            )
        if not 1 <= self.max_message_size <= 2**31 - 1:
            raise ConfigError(
                f"max-message-size must be between 1 byte and 2 GiB, got {self.max_message_size}"
            )
        if self.max_connections < 1:
            raise ConfigError(f"max-connections must be at least 1, got {self.max_connections}")
        if not 0 < self.handshake_timeout <= 3600:
            raise ConfigError(
                f"handshake-timeout must be in (0, 3600] seconds, got {self.handshake_timeout}"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log-level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"log-format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}"
            )
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be between 1 and {MAX_WORKERS}, got {self.workers}")
        if self.run_token is not None and not RUN_TOKEN_RE.fullmatch(self.run_token):
            raise ConfigError(
                "run-token must be 1-128 characters of A-Z a-z 0-9 . _ ~ + / = -, "
                f"got {self.run_token!r}"
            )
        if self.run_token is not None and self.run_token_file is not None:
            raise ConfigError("give run-token or run-token-file, not both")

    @property
    def logging_level(self) -> int:
        """The `logging` module's number for `log_level`."""
        level: int = getattr(logging, self.log_level.upper())
        return level

    def current_run_token(self) -> str | None:
        """The token /healthz answers with now: run_token, or what run_token_file holds (None
        when the file is missing or holds no valid token)."""
        if self.run_token_file is None:
            return self.run_token
        try:
            with open(self.run_token_file, encoding="ascii", errors="replace") as file:
                token = file.read(256).strip()
        except OSError:
            return None
        return token if RUN_TOKEN_RE.fullmatch(token) else None


def parse_size(text: str) -> int:
    """Parse a byte count such as `1048576`, `1MiB`, `16M` or `64k` (binary units)."""
    match = _SIZE_RE.match(text)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 1048576, 1MiB, 64KiB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _parse_port(text: str) -> int:
    return int(text.strip())


def _parse_token(text: str) -> str | None:
    return text or None  # empty: no token (a variable left empty by a deployment)


def _parse_seconds(text: str) -> float:
    value = float(text)
    if math.isnan(value):
        raise ValueError("not a number")
    return value


# (flag, Settings field, converter, help). The environment variable is WSECHO_<FIELD>.
_OPTIONS: tuple[tuple[str, str, Callable[[str], object], str], ...] = (
    ("--host", "host", str, "address to listen on (default 0.0.0.0: all IPv4 interfaces)"),
    ("--port", "port", _parse_port, "TCP port for WebSocket, /healthz and /metrics (default 8080)"),
    ("--backend", "backend", str, "WebSocket implementation: picows (default, fast) or websockets"),
    (
        "--hot-path",
        "hot_path",
        str,
        "picows backend's echo of established connections: compiled (C), python, or auto "
        "(default: compiled when wsecho._engine can be imported, else python)",
    ),
    (
        "--max-message-size",
        "max_message_size",
        parse_size,
        "largest message accepted, bytes or with a unit (default 1MiB); larger gets close 1009",
    ),
    (
        "--max-connections",
        "max_connections",
        int,
        "open WebSocket connections allowed (default 50000); beyond, the handshake gets HTTP 503",
    ),
    (
        "--handshake-timeout",
        "handshake_timeout",
        _parse_seconds,
        "seconds a client has to complete its opening handshake (default 10)",
    ),
    ("--log-level", "log_level", str, "debug, info (default), warning or error"),
    ("--log-format", "log_format", str, "text (default) or json (one object per line)"),
    (
        "--workers",
        "workers",
        int,
        "processes serving the port, each with its own event loop (default 1)",
    ),
    (
        "--run-token",
        "run_token",
        _parse_token,
        "the run's identity: /healthz answers with it in its Echolab-Run-Token header",
    ),
    (
        "--run-token-file",
        "run_token_file",
        _parse_token,
        "a file holding the run token, read at each /healthz (instead of --run-token)",
    ),
)


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return "WSECHO_" + field.upper()


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (values stay strings: conversion happens in `load`)."""
    parser = argparse.ArgumentParser(
        prog="wsecho",
        description="WebSocket echo service. Every flag can also be set by an environment "
        "variable: --max-connections is WSECHO_MAX_CONNECTIONS; flags win over the environment.",
    )
    for flag, field, _convert, help_text in _OPTIONS:
        parser.add_argument(flag, dest=field, metavar=field.split("_")[-1].upper(), help=help_text)
    parser.add_argument("--version", action="version", version=f"wsecho {__version__}")
    return parser


def load(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then WSECHO_* variables, then defaults. Raises ConfigError.

    argparse's own usage errors (unknown flag) exit with code 2 as well.
    """
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}
    for flag, field, convert, _help in _OPTIONS:
        raw = getattr(args, field)
        source = flag
        if raw is None:
            raw = environ.get(env_name(field))
            source = env_name(field)
        if raw is None:
            continue
        try:
            values[field] = convert(raw)
        except ValueError:
            raise ConfigError(f"{source}: invalid value {raw!r}") from None
    return Settings(**values)  # type: ignore[arg-type]
