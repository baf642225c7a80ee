"""What stands between the network and the app: the API key and body limits (``Guard``,
ASGI middleware), and uvicorn's bounded connections and head timeout."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from .errors import error_response
from .settings import ServeSettings


class Guard:
    """ASGI middleware run before routing: the bearer token (all routes but /health)
    and the body size limit (the body is read here, so an oversized one is never parsed)."""

    def __init__(
        self, app: Any, api_key: str | None, max_body_bytes: int, body_timeout_s: float = 30.0
    ) -> None:
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.api_key and scope.get("path") != "/health":
            given = [v for k, v in scope.get("headers") or [] if k == b"authorization"]
            if len(given) > 1:  # which one counts would depend on the proxy: refuse both
                await error_response(
                    400, "more than one Authorization header", "authentication_error"
                )(scope, receive, send)
                return
            # Compared as bytes: a UTF-8 client sends a non-ASCII key as UTF-8 bytes.
            scheme, _, token = (given[0] if given else b"").partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                await error_response(
                    401,
                    "missing API key: send the header 'Authorization: Bearer <key>'",
                    "authentication_error",
                )(scope, receive, send)
                return
            if not hmac.compare_digest(token.strip(), self.api_key.encode("utf-8")):
                await error_response(401, "invalid API key", "authentication_error")(
                    scope, receive, send
                )
                return
        too_large = f"request body is larger than {self.max_body_bytes} bytes"
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await error_response(413, too_large)(scope, receive, send)
            return
        body, more = b"", True
        try:
            async with asyncio.timeout(self.body_timeout_s):  # a body sent a byte a second
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.max_body_bytes:
                        await error_response(413, too_large)(scope, receive, send)
                        return
        except TimeoutError:
            message = f"request body not received within {self.body_timeout_s:g} s"
            await error_response(408, message)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def uvicorn_config(app: Any, settings: ServeSettings, host: str, port: int = 0) -> Any:
    """uvicorn's settings for ``app``: bounded connections, idle sockets closed, a prompt
    shutdown (``serve`` and the tests use the same)."""
    import resource

    import uvicorn

    # More descriptors where the hard limit allows, and never more connections than
    # descriptors: past the limit uvicorn answers 503 instead of failing to accept.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
            soft = max(soft, wanted)
        except (ValueError, OSError):
            pass
    limit = max(8, min(settings.max_connections, soft - 64))
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        http=head_timeout_protocol(settings.header_timeout_s),
        limit_concurrency=limit,
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )


def head_timeout_protocol(seconds: float) -> type:
    """uvicorn's HTTP protocol, closing a connection that sends no complete request head
    within ``seconds`` of opening or of its last response (uvicorn times out only idle
    keep-alive connections, not one that never sends a request or trickles its head)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class Protocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            waiting_after = self.cycle  # a new request head replaces the cycle

            def expire() -> None:
                if self.cycle is waiting_after and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(seconds, expire)

    return Protocol
