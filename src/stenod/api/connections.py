"""Connection-level limits for ``stenod serve``: uvicorn's httptools protocol with the defences
uvicorn does not have (issue 16).

- **Header timeout.** A connection must deliver a request's headers within ``header_timeout_s`` of
  its first byte (or of connecting). Slow-header clients (slowloris) and silent connections are
  answered 408 and closed; uvicorn alone waits forever.
- **Body idle timeout.** While a request body arrives, a pause longer than ``body_idle_timeout_s``
  is answered 408 and the connection closed. ~20,000 slow uploads used to exhaust the descriptor
  limit, after which every request failed for 80 s with nothing logged.
- **Connection caps.** At most ``max_connections`` open connections, and ``max_connections_per_client``
  from one client address; the connection over a cap gets a 503 in the API's error shape and is
  closed at once, so descriptors stay bounded whatever clients do.
- **Lingering close.** When a response is complete while the client is still sending the request
  body (a 413 for an upload over the limit, a 401 before the body is read), closing the socket at
  once makes the kernel send a reset, and about 1 in 5 clients saw "connection reset" instead of
  the 413. Here the write side is closed first and input is read and discarded (as nginx's
  ``lingering_close`` does) while it keeps coming, at most ``LINGER_IDLE_S`` apart, for up to
  ``LINGER_S`` / ``LINGER_MAX_BYTES`` in all, so the client finishes sending and reads the answer.
  uvicorn's keep-alive timer (5 s) is disarmed while lingering: it used to cut the linger short, so a
  client still sending after 5 s (20 MB at 4 MB/s) got a reset.

Every refusal is logged (warning, with the client address), at most once per reason every
``LOG_INTERVAL_S`` seconds with a count of the ones in between, so an attack cannot flood the logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

LINGER_S = 30.0
"""Longest time input is read and discarded after a response sent before the body was read."""
LINGER_IDLE_S = 5.0
"""While lingering, a pause in the client's input longer than this ends the linger (nginx's
``lingering_timeout``): a client that stopped sending reads the answer, it needs no more time."""
LINGER_MAX_BYTES = 256 * 1024 * 1024
"""Most bytes discarded while lingering; past this the connection is closed (the client may then
see a reset, but it has sent 256 MB past a refusal)."""
REFUSED_LINGER_S = 1.0
"""A connection refused over a cap lingers only this long: under attack its descriptor must go."""
LOG_INTERVAL_S = 10.0

Reason = Literal["header_timeout", "body_timeout", "max_connections", "max_connections_per_client"]
REASONS: tuple[Reason, ...] = ("header_timeout", "body_timeout", "max_connections", "max_connections_per_client")


@dataclass
class ConnectionLimits:
    """Limits shared by every connection of one server, and the per-address counts.

    Attributes:
        on_refused: called with the reason each time a limit triggers (metrics).
    """

    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    max_connections: int = 1000
    max_connections_per_client: int = 64
    on_refused: Callable[[Reason], None] | None = None
    per_client: Counter[str] = field(default_factory=Counter)
    _last_logged: dict[str, float] = field(default_factory=dict)
    _suppressed: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refused(self, reason: Reason, client: str, detail: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(reason)
            if last is not None and now - last < LOG_INTERVAL_S:
                self._suppressed[reason] += 1
                return
            self._last_logged[reason] = now
            more = self._suppressed.pop(reason, 0)
        suffix = f" (and {more} more since the last report)" if more else ""
        logger.warning("connection limit %s: %s from %s%s", reason, detail, client, suffix,
                       extra={"reason": reason, "client": client})


def _error_response(status: int, reason_phrase: str, message: str, code: str, *, retry_after: int | None = None) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error" if status < 500 else "service_unavailable",
                                 "param": None, "code": code}}).encode()
    headers = [
        f"HTTP/1.1 {status} {reason_phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        headers.append(f"retry-after: {retry_after}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


class _LingeringTransport:
    """The transport a request cycle writes to: ``close()`` while the request body is still
    arriving becomes a lingering close on the protocol."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_lingering()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus header/body timeouts, connection caps and lingering close.
    Built by uvicorn through ``functools.partial(LimitedHttpToolsProtocol, limits=...)``."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._client_key: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_arriving = False
        self._lingering = False
        self._linger_bytes = 0
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_deadline = 0.0
        self._linger_last_input = 0.0
        self._refused = False

    # -- connection caps ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        client = self.client[0] if self.client else "unix"
        limits = self.limits
        if len(self.connections) > limits.max_connections:
            self._refuse_connection("max_connections", client, f"{len(self.connections) - 1} connections open, "
                                    f"the limit is {limits.max_connections}")
            return
        if limits.per_client[client] >= limits.max_connections_per_client:
            self._refuse_connection("max_connections_per_client", client,
                                    f"{limits.per_client[client]} connections open from this address, "
                                    f"the limit is {limits.max_connections_per_client}")
            return
        limits.per_client[client] += 1
        self._client_key = client
        self._arm_header_timer()

    def _refuse_connection(self, reason: Reason, client: str, detail: str) -> None:
        self._refused = True
        self.limits.refused(reason, client, detail)
        self.transport.write(_error_response(
            503, "Service Unavailable", f"too many connections ({detail}); retry later", reason, retry_after=1,
        ))
        self._close_lingering_now_or_later(REFUSED_LINGER_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._client_key is not None:
            counts = self.limits.per_client
            counts[self._client_key] -= 1
            if counts[self._client_key] <= 0:
                del counts[self._client_key]
            self._client_key = None
        super().connection_lost(exc)

    # -- timeouts -------------------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def _arm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(self.limits.body_idle_timeout_s, self._body_timeout)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._linger_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._lingering:
            return
        client = self.client[0] if self.client else "unix"
        self.limits.refused("header_timeout", client,
                            f"request headers not received within {self.limits.header_timeout_s:g} s")
        self.transport.write(_error_response(
            408, "Request Timeout", f"request headers not received within {self.limits.header_timeout_s:g} s",
            "header_timeout",
        ))
        self._close_lingering_now_or_later()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._lingering or not self._body_arriving:
            return
        if self.flow.read_paused:  # we stopped reading (the app is behind): not the client's pause
            self._arm_body_timer()
            return
        client = self.client[0] if self.client else "unix"
        detail = f"no request body bytes for {self.limits.body_idle_timeout_s:g} s"
        self.limits.refused("body_timeout", client, detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(_error_response(408, "Request Timeout", detail + "; upload abandoned", "body_timeout"))
            cycle.response_started = True
        if cycle is not None:
            # The app waiting for the body sees a disconnect and stops; anything it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self._body_arriving = False
        self._close_lingering_now_or_later()

    # -- parser callbacks -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._lingering or self._refused:
            self._discard(len(data))
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _LingeringTransport(self.transport, self)  # type: ignore[assignment]
        self._body_arriving = True
        self._arm_body_timer()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm_body_timer()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._body_arriving = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._lingering and self.timeout_keep_alive_task is not None:
            # uvicorn arms its keep-alive timer here (the transport is half-closed, not closing);
            # it would close the socket under a client still sending, so the linger owns the close.
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def send_400_response(self, msg: str) -> None:
        # Malformed HTTP gets the API's error shape too, not uvicorn's plain text.
        self.transport.write(_error_response(400, "Bad Request", msg, "invalid_http"))
        self.transport.close()

    # -- lingering close -----------------------------------------------------------------------
    def close_lingering(self) -> None:
        """Close after a response: at once if the request was read whole, else half-close and
        keep discarding input for a while so the client reads the response, not a reset."""
        if not self._body_arriving:
            self.transport.close()
            return
        self._close_lingering_now_or_later()

    def _close_lingering_now_or_later(self, linger_s: float = LINGER_S) -> None:
        if self._lingering or self.transport.is_closing():
            return
        self._lingering = True
        self._cancel_timers()
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            self.transport.close()
            return
        # Reading may be paused (the app stopped reading the body): the client must be able to
        # finish sending, so discard at full speed.
        if self.flow is not None:
            self.flow.resume_reading()
        now = self.loop.time()
        self._linger_deadline = now + linger_s
        self._linger_last_input = now
        self._linger_timer = self.loop.call_later(min(linger_s, LINGER_IDLE_S), self._linger_check)

    def _linger_check(self) -> None:
        """Close once the client's input has paused for ``LINGER_IDLE_S`` or the linger is over."""
        now = self.loop.time()
        idle_until = self._linger_last_input + LINGER_IDLE_S
        if now >= self._linger_deadline or now >= idle_until:
            self._linger_timer = None
            self.transport.close()
            return
        self._linger_timer = self.loop.call_at(min(idle_until, self._linger_deadline), self._linger_check)

    def _discard(self, n: int) -> None:
        self._linger_bytes += n
        self._linger_last_input = self.loop.time()
        if self._linger_bytes > LINGER_MAX_BYTES:
            self.transport.close()

    def eof_received(self) -> None:
        if self._lingering or self._refused:
            self.transport.close()
