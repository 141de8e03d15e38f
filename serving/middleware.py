"""ASGI middleware of the scoring service, registered with `LeadScoring.add_asgi_middleware`.

Middleware sees every request (the BentoML endpoints and the mounted `/model` route), which
makes it the place for checks that hold for all of them, such as API keys.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

ACCEPTED_MEDIA_TYPES = ("application/json", "")  # no Content-Type: BentoML reads JSON


class JsonBodiesOnly:
    """Answer 415 to a POST whose body is declared as anything but JSON.

    BentoML also parses form and multipart bodies, and answers a multipart body without a
    boundary with a 500. The service's clients send JSON; another media type is their mistake,
    and the usual one is `curl -d`, which declares a form.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            declared = Headers(scope=scope).get("content-type", "")
            media_type = declared.split(";")[0].strip().lower()
            if media_type not in ACCEPTED_MEDIA_TYPES:
                reason = f"send the body as JSON with Content-Type: application/json, not {media_type}"
                response = JSONResponse(
                    {
                        "error": "Unsupported Media Type",
                        "detail": [{"type": "unsupported_media_type", "loc": [], "msg": reason}],
                    },
                    status_code=415,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
