"""Transport limits, below the routes: a request body (chunked or not) over `max_body` bytes gets 413
without being held in memory, a body not received within `client_timeout` seconds gets 408
(`BodyLimit`, ASGI middleware), and a client that takes longer than that to send its headers is
disconnected (`header_timeout_protocol`, for uvicorn)."""

import asyncio
import json

DRAIN_SECONDS = 1.0  # an oversized body is read (and dropped) this long before the 413


class BodyLimit:
    """ASGI middleware: read a request's body (chunked or not) up to `max_body` bytes, each part within
    `timeout` seconds; 413 past the limit and 408 past the time, without holding more than the limit."""

    def __init__(self, app, max_body: int, timeout: float):
        self.app, self.max_body, self.timeout = app, max_body, timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _plain(send, 413, f"request body over {self.max_body} bytes (--max-body)")
        parts, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
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
