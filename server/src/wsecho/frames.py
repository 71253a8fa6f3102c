"""RFC 6455 frames as the server writes and checks them: opcodes, headers, close codes."""

from __future__ import annotations

# Opcodes (RFC 6455 5.2).
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# First header byte of an unfragmented text / binary frame (FIN set, no reserved bits).
FIN_TEXT, FIN_BINARY = 0x80 | OP_TEXT, 0x80 | OP_BINARY
# The two header bytes of every small server frame, prebuilt: the echo path only looks one up.
SMALL_HEADS = {
    first: tuple(bytes((first, size)) for size in range(126)) for first in (FIN_TEXT, FIN_BINARY)
}
# The largest payload of a control frame, and of a frame with a one-byte length.
MAX_SMALL_PAYLOAD = 125

# Close codes (RFC 6455 7.4.1) that the server sends.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_TEXT = 1007
CLOSE_MESSAGE_TOO_BIG = 1009


def valid_close_code(code: int) -> bool:
    """May `code` appear in a close frame? (RFC 6455 7.4, IANA registry: 1012-1014 added later)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def frame_head(opcode: int, size: int) -> bytes:
    """Header of an unmasked, unfragmented server frame with a `size`-byte payload."""
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big")
    return bytes((first, 127)) + size.to_bytes(8, "big")


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """A whole server close frame with `code` and `reason`."""
    body = code.to_bytes(2, "big") + reason
    return frame_head(OP_CLOSE, len(body)) + body
