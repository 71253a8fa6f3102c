"""Error kinds of a connection attempt or an open connection (keys of `errors` in the files)."""

from __future__ import annotations

import asyncio
import errno
import socket

from wsswarm.wsclient import HandshakeError, sendable_close_code

__all__ = ["classify", "close_kind", "describe", "sendable_close_code"]

# Failures of an attempt (the connection never opened).
REFUSED = "refused"
TIMEOUT = "timeout"
RESET = "reset"
# No local port left for the 4-tuple (connect, EADDRNOTAVAIL; bind without
# IP_BIND_ADDRESS_NO_PORT, EADDRINUSE), or a source address this host does not have.
ADDR_NOT_AVAILABLE = "addr_not_available"
TOO_MANY_OPEN_FILES = "too_many_open_files"
HANDSHAKE_INVALID = "handshake_invalid"  # not HTTP, or a 101 that is not a valid WS upgrade
UNREACHABLE = "unreachable"
OTHER = "other"
# Ends of an open connection that the client did not ask for.
DROPPED = "dropped"  # TCP closed or reset without a WebSocket close frame
ECHO_MISMATCH = "echo_mismatch"  # counted per message; the connection goes on
BACKLOG = "backlog"  # open mode: a send skipped because 10,000 were already in flight


def close_kind(code: int) -> str:
    """Kind of a close frame that the server sent on its own (e.g. `close_1001`)."""
    return f"close_{code}"


def classify(exc: BaseException) -> str:
    """Map an exception of a connection attempt (TCP connect or upgrade) to an error kind."""
    if isinstance(exc, HandshakeError):
        if exc.status is not None and exc.status != 101:
            return f"handshake_{exc.status}"
        return HANDSHAKE_INVALID
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TIMEOUT
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return RESET
    if isinstance(exc, socket.gaierror):
        return UNREACHABLE
    if isinstance(exc, OSError):
        code = exc.errno
        if code in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
            return ADDR_NOT_AVAILABLE
        if code in (errno.EMFILE, errno.ENFILE):
            return TOO_MANY_OPEN_FILES
        if code == errno.ECONNREFUSED:
            return REFUSED
        if code == errno.ETIMEDOUT:
            return TIMEOUT
        if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return RESET
        if code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return UNREACHABLE
    return OTHER


def describe(exc: BaseException) -> str:
    """One line for the console (`Connection error: ...` in compat mode)."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
