"""ASGI middleware of the scoring service, registered with `LeadScoring.add_asgi_middleware`.

Middleware sees every request (the BentoML endpoints and the mounted `/model` route), which
makes it the place for checks that hold for all of them: API keys (`ApiKeyAuth`), the body
size (`BodySizeLimit`) and the media type (`JsonBodiesOnly`). They run in that order, the
first registered outermost. Innermost, `DirectRoute` answers the hot `POST /score` itself,
once those checks have passed.

Every refusal has the body of BentoML's validation errors,
`{"error": "<title>", "detail": [{"type", "loc", "msg"}]}`, so clients handle one shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import ApiKeys, allows, bearer_token, required_role

ACCEPTED_MEDIA_TYPES = ("application/json", "")  # no Content-Type: BentoML reads JSON


def refusal(
    status: int, title: str, kind: str, loc: list[str | int], msg: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A 4xx in the service's error shape."""
    return JSONResponse(
        {"error": title, "detail": [{"type": kind, "loc": loc, "msg": msg}]}, status_code=status, headers=headers
    )


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands on `body`, already read, in one message, then the client's own (its disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class ApiKeyAuth:
    """401 without a valid `Authorization: Bearer <key>`, 403 when the key's role is not enough.

    The keys are the service instance's (`LeadScoring.api_keys`, loaded at start-up), asked
    for on every request through `keys`; before the instance exists every guarded path is
    refused with 503. Which path needs which role: `serving.auth.required_role`.
    """

    def __init__(self, app: ASGIApp, keys: Callable[[], ApiKeys | None]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":  # CORS preflights carry no key
            await self.app(scope, receive, send)
            return
        needed = required_role(scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        keys = self.keys()
        if keys is None:
            response = refusal(503, "Service Unavailable", "starting", [], "the service is starting: try again")
            await response(scope, receive, send)
            return
        token = bearer_token(Headers(scope=scope).get("authorization"))
        challenge = {"WWW-Authenticate": 'Bearer realm="leadscore"'}
        loc: list[str | int] = ["header", "authorization"]
        if token is None:
            response = refusal(
                401, "Unauthorized", "missing_api_key", loc,
                "send an API key: Authorization: Bearer <key>", challenge,
            )  # fmt: skip
        elif (granted := keys.role_of(token)) is None:
            response = refusal(401, "Unauthorized", "invalid_api_key", loc, "this API key is not valid", challenge)
        elif not allows(granted, needed):
            response = refusal(
                403, "Forbidden", "insufficient_role", loc,
                f"this API key has the role {granted}; {scope['path']} needs {needed}",
            )  # fmt: skip
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


class BodySizeLimit:
    """413 for a request body over `max_bytes`, before anything parses it.

    A declared Content-Length over the limit is refused without reading the body; a body sent
    without one (chunked) is read up to the limit and refused as soon as it passes it. A body
    within the limit is handed on as it came.
    """

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, limit: int) -> JSONResponse:
        return refusal(
            413, "Content Too Large", "body_too_large", ["body"],
            f"the request body is larger than {limit:,} bytes: send fewer leads per request (at most 1,000) "
            "or fewer interactions per lead",
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                response = refusal(
                    400, "Bad Request", "invalid_header", ["header", "content-length"], "not a whole number"
                )
                await response(scope, receive, send)
                return
            if int(declared) > limit:
                await self._too_large(limit)(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replaying(b"".join(chunks), receive), send)


class JsonBodiesOnly:
    """Answer 415 to a POST whose body is declared as anything but JSON (or, on the paths of
    `other_media_types`, one of theirs: Salesforce's SOAP is XML).

    BentoML also parses form and multipart bodies, and answers a multipart body without a
    boundary with a 500. The service's clients send JSON; another media type is their mistake,
    and the usual one is `curl -d`, which declares a form.
    """

    def __init__(self, app: ASGIApp, other_media_types: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.app = app
        self.other_media_types = dict(other_media_types or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            declared = Headers(scope=scope).get("content-type", "")
            media_type = declared.split(";")[0].strip().lower()
            if media_type not in ACCEPTED_MEDIA_TYPES + self.other_media_types.get(scope["path"], ()):
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


class JsonNotFound:
    """A 404 in the service's error shape for a path no route serves.

    BentoML's router answers a path that matches none of its routes (and none of the mounted
    app's) with a plain-text "Not Found"; a CRM reading `{"error", "detail"}` from every refusal
    would fail to parse it. This rewrites that one answer; every other response, a 404 naming an
    unknown lead included, passes as it was sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_json_404(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 404:
                media_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                if media_type.startswith("text/plain"):
                    replaced = True
                    response = refusal(
                        404, "Not Found", "unknown_path", ["path"],
                        f"no endpoint serves {scope['method']} {scope['path']}: the service's document is at /docs.json",
                    )  # fmt: skip
                    await response(scope, receive, send)
                    return
            if replaced:  # the plain-text body, already answered
                return
            await send(message)

        await self.app(scope, receive, send_json_404)


class DirectRoute:
    """One hot route answered here, without the router and the mounted app's stack.

    `answer(body)` answers a `method` request to `path` from its whole body, or returns None to
    leave it to the app, which then reads the same body. Every other request goes on untouched.
    Registered innermost, it runs after the key, size and media-type checks. For `POST /score`
    it skips BentoML's request context, Starlette's routing and FastAPI's (route matching over
    every route, dependencies, the handler); `serving.service.answer_score` is the route's own
    answer, so both give the same bytes (tests/test_direct_route.py).
    """

    def __init__(self, app: ASGIApp, method: str, path: str, answer: Callable[[bytes], Awaitable[Response | None]]) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        response = await self.answer(body)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)
