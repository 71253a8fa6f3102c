"""The connections of a worker: closed loop (2017), its compat variant, and open loop.

Each is one small protocol object with `__slots__` and no Task: uvloop calls `data_received`
with each echo, the connection records the latency into its worker and sends the next message
from inside that callback.
"""

from __future__ import annotations

import json
import time
from collections import deque
from time import perf_counter_ns
from typing import TYPE_CHECKING, ClassVar

from wsswarm import errors
from wsswarm.wsclient import ClientProtocol

if TYPE_CHECKING:
    from wsswarm.worker import Worker

OPEN_MODE_MAX_IN_FLIGHT = 10_000  # per connection; beyond that sends are counted as dropped


class ClosedConn(ClientProtocol):
    """Closed loop: one message in flight, the next is sent as soon as its echo is read."""

    # sent: the echo frame expected back (the server's unmasked frame of what was sent).
    __slots__ = ("closed_by_server", "opened", "sent", "sent_ns")
    # The one worker of this process, as a class attribute: one slot less per connection.
    w: ClassVar[Worker]

    def __init__(self) -> None:
        super().__init__()
        self.sent: bytes | None = None
        self.sent_ns = 0
        self.opened = False
        self.closed_by_server = False

    def on_open(self) -> None:
        self.opened = True
        w = self.w
        w.on_open(self)
        if w.sending:
            self.send_next(perf_counter_ns())

    def send_next(self, now: int) -> None:
        w = self.w
        # The 2017 payload carries wall-clock ms; derived from the monotonic reading we already
        # have (offset refreshed every tick) to save a clock call per message.
        now_ms = (now + w.wall_offset_ns) // 1_000_000
        if now_ms != w.payload_ms:
            w.new_payload(now_ms)
        self.sent = w.echo
        self.sent_ns = now
        self.transport.write(w.frame)  # type: ignore[union-attr]
        w.sent_total += 1

    def data_received(self, data: bytes) -> None:
        # Hot path: one read holding exactly the echo of what we sent, as one frame (the usual
        # case for ~30-byte messages): a single bytes comparison checks header and payload.
        if data == self.sent and self.rest is None:
            now = perf_counter_ns()
            w = self.w
            # Latency includes this process's own handling of the echo: what a user would see.
            w.lat_append((now - self.sent_ns) // 1000)
            if w.sending:
                self.send_next(now)
            else:
                self.sent = None
        else:
            self.receive(data)

    def on_text(self, payload: bytes) -> None:
        # General path (split or coalesced reads, fragmented messages).
        now = perf_counter_ns()
        w = self.w
        sent = self.sent
        if sent is not None and payload == sent[2:]:
            w.lat_append((now - self.sent_ns) // 1000)
        else:
            w.errors[errors.ECHO_MISMATCH] += 1
        if w.sending:
            self.send_next(now)
        else:
            self.sent = None

    def on_close_frame(self, code: int) -> None:
        if not self.w.closing:
            self.closed_by_server = True
            self.w.errors[errors.close_kind(code)] += 1

    def on_lost(self) -> None:
        self.w.on_disconnected(self)

    def in_flight(self) -> int:
        return 0 if self.sent is None else 1


class EngineConn(ClosedConn):
    """Closed loop on the compiled hot path: after an echo read here, the engine takes over.

    The Python path is the way in (the first echo of a connection) and the way back for
    everything the engine ejects (see Worker.engine_ready); in between the transport is paused
    and `wsswarm._engine` reads, times and answers the echoes on the same socket.
    """

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        if data == self.sent and self.rest is None:
            now = perf_counter_ns()
            w = self.w
            w.lat_append((now - self.sent_ns) // 1000)
            if not w.sending:
                self.sent = None
                return
            transport = self.transport
            assert transport is not None
            # Nothing of ours may wait in the transport's buffer once the engine writes on
            # the socket directly; the frame sent just below is written out before its echo
            # can arrive.
            adopt = w.engine is not None and not transport.get_write_buffer_size()
            self.send_next(now)
            if adopt:
                w.adopt(self)
        else:
            self.receive(data)


class CompatConn(ClosedConn):
    """2017 semantics as well: latency = Date.now() - echoed timestamp, whole wall-clock ms."""

    # The fast path repeats ClosedConn's on purpose: a compat hook called from
    # ClosedConn.data_received would cost every default-mode echo a call; here only --compat
    # pays for the JSON parse.
    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        if data == self.sent and self.rest is None:
            now = perf_counter_ns()
            w = self.w
            w.lat_append((now - self.sent_ns) // 1000)
            self.compat_latency(data[2:])
            if w.sending:
                self.send_next(now)
            else:
                self.sent = None
        else:
            self.receive(data)

    def on_text(self, payload: bytes) -> None:
        sent = self.sent
        if sent is not None and payload == sent[2:]:
            self.compat_latency(payload)
        super().on_text(payload)

    def compat_latency(self, payload: bytes) -> None:
        w = self.w
        try:
            w.compat_lat_ms += time.time_ns() // 1_000_000 - json.loads(payload)["timestamp"]
            w.compat_rt += 1
        except (ValueError, KeyError, TypeError):
            pass


class OpenConn(ClosedConn):
    """Open loop: the worker's scheduler sends at fixed intended times; FIFO of those in flight."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        super().__init__()
        self.queue: deque[tuple[int, bytes]] = deque()

    def on_open(self) -> None:
        self.opened = True
        self.w.on_open(self)

    def send_at(self, intended_ns: int) -> None:
        w = self.w
        if len(self.queue) >= OPEN_MODE_MAX_IN_FLIGHT:
            w.errors[errors.BACKLOG] += 1
            return
        now_ms = (intended_ns + w.wall_offset_ns) // 1_000_000
        if now_ms != w.payload_ms:
            w.new_payload(now_ms)
        self.queue.append((intended_ns, w.echo))
        self.transport.write(w.frame)  # type: ignore[union-attr]
        w.sent_total += 1

    def data_received(self, data: bytes) -> None:
        self.receive(data)

    def on_text(self, payload: bytes) -> None:
        now = perf_counter_ns()
        w = self.w
        if not self.queue:
            w.errors[errors.ECHO_MISMATCH] += 1
            return
        intended, sent = self.queue.popleft()
        if payload == sent[2:]:
            # From the intended send time: a stalled server or client cannot hide behind
            # coordinated omission.
            w.lat_append((now - intended) // 1000)
        else:
            w.errors[errors.ECHO_MISMATCH] += 1

    def in_flight(self) -> int:
        return len(self.queue)
