"""A request is traced with one span, its own: no span per ASGI message received or sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from benchmarks.bench_model import example_lead
from serving.tracing import RequestSpansOnly

AS_OF = "2024-05-01T00:00:00Z"


class Ended(SpanProcessor):
    """Every span that ends, sampled or not (BentoML records spans without sampling them by default)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


@pytest.fixture(scope="module")
def exported() -> Ended:
    ended = Ended()
    BentoMLContainer.tracer_provider.get().add_span_processor(ended)
    return ended


@pytest.fixture(scope="module")
async def client(trained_bundle: Path, start_service, exported: Ended) -> AsyncIterator[httpx.AsyncClient]:
    async with start_service(trained_bundle) as http:
        yield http


@pytest.mark.anyio
async def test_a_scored_lead_is_one_span(client: httpx.AsyncClient, exported: Ended) -> None:
    body = {"lead": example_lead("L-s", "2024-03-01T00:00:00Z", [{"type": "pricing_page_view", "occurred_at": "2024-04-01T00:00:00Z"}]),
            "as_of": AS_OF}  # fmt: skip
    exported.spans.clear()

    assert (await client.post("/score", json=body)).status_code == 200

    spans = exported.spans
    assert [s.name for s in spans] == ["POST /score"]
    # The request's span keeps what the message spans said: the status and the route.
    assert spans[0].attributes is not None and spans[0].attributes.get("http.status_code") == 200


@pytest.mark.anyio
async def test_a_refusal_is_one_span_too(client: httpx.AsyncClient, exported: Ended) -> None:
    exported.spans.clear()

    assert (await client.post("/score", json={"lead": {"lead_id": ""}})).status_code == 400

    assert len(exported.spans) == 1


def test_the_middleware_leaves_out_only_the_message_spans() -> None:
    middleware = RequestSpansOnly(lambda scope, receive, send: None)  # type: ignore[arg-type, return-value]
    assert middleware.exclude_receive_span and middleware.exclude_send_span
    kept = RequestSpansOnly(lambda scope, receive, send: None, exclude_spans=["receive"])  # type: ignore[arg-type, return-value]
    assert kept.exclude_receive_span and not kept.exclude_send_span
