"""Transport limits, below the routes: a request body (chunked or not) over `max_body` bytes gets 413
without being held in memory, a body not received whole within `client_timeout` seconds of its first
wait gets 408 however it is sent (`BodyLimit`, ASGI middleware), a client that takes longer than that
to send its headers is disconnected (`header_timeout_protocol`, for uvicorn), and the log says each
kind of transport error at most once every `QuietLog.every` seconds with the count of those left out
(no flood of "Too many open files" when the descriptors run out)."""

import asyncio
import json
import logging
import re
import time

DRAIN_SECONDS = 1.0  # an oversized body is read (and dropped) this long before the 413


class BodyLimit:
    """ASGI middleware: read a request's body (chunked or not) up to `max_body` bytes, the whole of it
    within `timeout` seconds; 413 past the limit and 408 past the time, without holding more than the limit."""

    def __init__(self, app, max_body: int, timeout: float):
        self.app, self.max_body, self.timeout = app, max_body, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _plain(send, 413, f"request body over {self.max_body} bytes (--max-body)")
        parts, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout  # for the whole body: a byte every few seconds does not reset it
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return await _plain(send, 408, f"request body not received within {self.timeout:g} s")
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body:
                if message.get("more_body", False):
                    await self._drain(receive)
                return await _plain(send, 413, f"request body over {self.max_body} bytes (--max-body)")
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, sent = b"".join(parts), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _drain(self, receive) -> None:
        """Read and drop the rest of an oversized body for up to DRAIN_SECONDS, so that the client, still
        sending, can read the 413 (closing on unread data would reset the connection)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while (left := deadline - loop.time()) > 0:
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return


async def _plain(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header_timeout_protocol(timeout: float):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete within `timeout` s."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # the headers are in

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout, self._expire)

        def _disarm(self) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            busy = self.cycle is not None and not self.cycle.response_complete
            if not busy and not self.transport.is_closing():
                self.transport.close()

    return Protocol


class QuietLog(logging.Filter):
    """A log filter letting each message (its text up to the first digit or colon) through at most once
    every `every` seconds; the next one let through says how many were left out."""

    def __init__(self, every: float = 10.0):
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = f"{record.name}:{re.split(r'[0-9:]', message, maxsplit=1)[0][:80].strip()}"
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        self._last[key] = now
        if left := self._left_out.pop(key, 0):
            record.msg, record.args = f"{message} (and {left} like it in the last {self.every:g} s, not logged)", None
        if len(self._last) > 1024:  # many kinds of message: forget the old ones
            self._last = {k: t for k, t in self._last.items() if now - t < self.every}
        return True


def quiet_logs(every: float = 10.0) -> QuietLog:
    """Install one QuietLog on asyncio's logger (accept() failing when the descriptors run out) and uvicorn's."""
    quiet = QuietLog(every)
    for name in ("asyncio", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietLog) for f in logger.filters):
            logger.addFilter(quiet)
    return quiet


async def client_gone(request) -> None:
    """Returns when the client has gone (the body is already read, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
