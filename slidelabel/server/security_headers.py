"""Headers every answer carries so that a browser does not turn the server against its users: no
guessing of content types (an uploaded file served as a page), no framing by other sites
(clickjacking of a labelling page), no referrer (a gallery link's token is in its path), and for
the web client a content security policy: its own scripts only, no plugins, no foreign forms.

The API documentation pages (``/docs``, ``/redoc``) load their scripts from a CDN and inline,
so the policy leaves them out."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: On every answer.
HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"))
#: On every answer but the API documentation's. Styles set by the web client's code on elements
#: need 'unsafe-inline' for styles (never for scripts); pictures come as data: and blob: URLs too.
CONTENT_SECURITY_POLICY = (b"content-security-policy",
                           b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           b"img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           b"frame-ancestors 'none'")
#: Path endings of the API documentation pages (wherever the app is mounted).
DOCUMENTATION = ("/docs", "/redoc", "/docs/oauth2-redirect")


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` (and the policy) to each HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = HEADERS if scope["path"].endswith(DOCUMENTATION) else (*HEADERS, CONTENT_SECURITY_POLICY)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, with_headers)
