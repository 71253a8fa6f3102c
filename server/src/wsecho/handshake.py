"""The server's side of the WebSocket opening handshake (RFC 6455 4.2): checking a plain upgrade
request and building the 101 response. Everything else is answered elsewhere (picows_fallback)."""

from __future__ import annotations

import base64
import binascii
import hashlib

from wsecho.common import HEALTH_PATH, METRICS_PATH

# picows' limit for a request head (larger: it disconnects); the lean path hands such requests
# to picows as soon as they pass it, so both paths behave the same.
HTTP_MAX_SIZE = 16 * 1024
HEAD_END = b"\r\n\r\n"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SWITCHING_PROTOCOLS = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: %b\r\n\r\n"
)
_HTTP_PATHS = (HEALTH_PATH.encode(), METRICS_PATH.encode())


def upgrade_accept(raw: bytes) -> bytes | None:
    """The Sec-WebSocket-Accept value for a plain, valid WebSocket upgrade request head (without
    its closing blank line); None for anything else, which picows then answers (an HTTP
    endpoint, an error...).

    Deliberately strict: `GET <path> HTTP/1.1`, each of the four headers once, `Upgrade:
    websocket`, an `upgrade` token in `Connection`, version 13, a key of 16 base64-encoded bytes.
    """
    lines = raw.split(b"\r\n")
    request = lines[0].split(b" ")
    if len(request) != 3 or request[0] != b"GET" or request[2] != b"HTTP/1.1":
        return None
    if request[1].split(b"?", 1)[0] in _HTTP_PATHS:
        return None
    upgrade = connection = version = key = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name[0] in b" \t" or name[-1] in b" \t":
            return None  # not a header line, or an obsolete folded one: picows decides
        name = name.lower()
        if name == b"upgrade":
            if upgrade is not None:
                return None
            upgrade = value.strip().lower()
        elif name == b"connection":
            if connection is not None:
                return None
            connection = value.lower()
        elif name == b"sec-websocket-version":
            if version is not None:
                return None
            version = value.strip()
        elif name == b"sec-websocket-key":
            if key is not None:
                return None
            key = value.strip()
    if upgrade != b"websocket" or version != b"13" or key is None or connection is None:
        return None
    if b"upgrade" not in [token.strip() for token in connection.split(b",")]:
        return None
    try:
        if len(key) != 24 or len(base64.b64decode(key, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


def switching_protocols(accept: bytes) -> bytes:
    """The 101 response that completes the handshake."""
    return _SWITCHING_PROTOCOLS % accept
