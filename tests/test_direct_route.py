"""`POST /score` answered by `serving.middleware.DirectRoute`: the same bytes as the app's route.

The service's app answers `/score` in its innermost middleware, without the router and the
mounted FastAPI app's stack; the FastAPI app (`serving.service.api`), called on its own inside
the same running service, answers through the declared route. Both must give the same status,
media type and body for every kind of request: a lead scored with and without reasons, in
French, a lead the model refuses, an unknown stored lead, and bodies that do not validate.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from serving.middleware import DirectRoute
from tests.test_service import AS_OF, a_lead

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def clients(trained_bundle: Path, start_service) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(the whole app, its middlewares and the direct route; the FastAPI app alone, its route)."""
    from serving.service import api

    async with start_service(trained_bundle) as whole:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://leadscore.test", headers=whole.headers) as route:
            yield whole, route


def _body(request: dict[str, Any] | str | bytes) -> bytes:
    return request if isinstance(request, bytes) else (request if isinstance(request, str) else json.dumps(request)).encode()


REQUESTS: dict[str, dict[str, Any] | str | bytes] = {
    "reasons": {"lead": a_lead(), "as_of": AS_OF, "top_k": 3},
    "no reasons": {"lead": a_lead("L-2"), "as_of": AS_OF, "explain": False},
    "in French": {"lead": a_lead("L-3"), "as_of": AS_OF, "language": "fr"},
    "created after as_of": {"lead": a_lead("L-4", created_at="2024-06-01T00:00:00Z"), "as_of": AS_OF},
    "employee count not a number": {"lead": a_lead("L-5", attributes={**a_lead()["attributes"], "employee_count": "a few"})},
    "unknown stored lead": {"lead_id": "nobody-here", "as_of": AS_OF},
    "lead and lead_id": {"lead": a_lead(), "lead_id": "L-1"},
    "neither": {"as_of": AS_OF},
    "top_k out of range": {"lead": a_lead(), "top_k": 99},
    "interaction without a time": {"lead": a_lead(interactions=[{"type": "page_view"}])},
    "malformed JSON": b'{"lead": {',
    "empty body": b"",
    "a list": b"[1, 2]",
}


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_the_direct_route_answers_what_the_route_answers(name: str, clients) -> None:
    whole, route = clients
    body = _body(REQUESTS[name])
    headers = {"content-type": "application/json"}

    direct = await whole.post("/score", content=body, headers=headers)
    declared = await route.post("/score", content=body, headers=headers)

    assert direct.status_code == declared.status_code, (direct.text, declared.text)
    assert direct.headers["content-type"] == declared.headers["content-type"]
    assert direct.content == declared.content
    expected_status = {"reasons": 200, "no reasons": 200, "in French": 200, "unknown stored lead": 404}.get(name, 400)
    assert direct.status_code == expected_status, direct.text


class _App:
    """An inner app that records what it was called with and answers 204."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        await Response(status_code=204)(scope, receive, send)


async def _call(app: DirectRoute, method: str, path: str, chunks: list[bytes]) -> list[Message]:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    return sent


async def test_direct_route_answers_its_route_and_hands_on_everything_else_with_its_body() -> None:
    inner = _App()
    answered: list[bytes] = []

    async def answer(body: bytes) -> Response | None:
        answered.append(body)
        return Response(b"ok", status_code=200) if body.startswith(b"{") else None

    app = DirectRoute(inner, method="POST", path="/score", answer=answer)

    sent = await _call(app, "POST", "/score", [b'{"a"', b": 1}"])
    assert sent[0]["status"] == 200 and answered == [b'{"a": 1}'] and inner.bodies == []

    sent = await _call(app, "POST", "/score", [b"not ", b"json"])  # answer declined: the app reads the same body
    assert sent[0]["status"] == 204 and inner.bodies == [b"not json"]

    for method, path in (("GET", "/score"), ("POST", "/score_batch"), ("POST", "/score/")):
        sent = await _call(app, method, path, [b"{}"])
        assert sent[0]["status"] == 204
    assert inner.bodies == [b"not json", b"{}", b"{}", b"{}"] and len(answered) == 2
