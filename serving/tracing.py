"""BentoML's request tracing with one span per request, not one per ASGI message.

BentoML wraps every request in OpenTelemetry's ASGI middleware, which by default opens a child
span for each message the app receives or sends (`http receive`, `http send`): three spans
more per `POST /score`, each with its attributes, started and ended on the event loop. They say
nothing the request's own span does not (its status, its duration), and they cost about 0.1 ms
a request, a fifth of what scoring the lead costs (issue 16's profile, `benchmarks/README.md`).
`RequestSpansOnly` is that middleware with those message spans left out (its `exclude_spans`
option); the request's span, its trace id in the access log and any exporter configured for
BentoML are unchanged.

`trace_requests_only` puts it in place of the class BentoML imports when a worker builds the
service's app, after importing the service's module (where `serving.service` calls it).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation import asgi
from starlette.types import ASGIApp

MESSAGE_SPANS: list[Any] = ["receive", "send"]  # what `exclude_spans` leaves out


class RequestSpansOnly(asgi.OpenTelemetryMiddleware):
    """OpenTelemetry's ASGI middleware without a span per received or sent message."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        options.setdefault("exclude_spans", MESSAGE_SPANS)
        super().__init__(app, **options)


def trace_requests_only() -> None:
    """Have BentoML build services' apps with `RequestSpansOnly` for their tracing."""
    asgi.OpenTelemetryMiddleware = RequestSpansOnly  # type: ignore[misc, assignment]
