"""The HTTP floor: a minimal ASGI app (Starlette on uvicorn) that parses the JSON body and answers.

Started beside the scoring service, it is called with the same body at the same pace, so its
latency is what this machine charges for an HTTP round trip at that moment, before any scoring.
Run: `python -m uvicorn benchmarks.bare_http:app --port PORT`.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def score(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    return JSONResponse({"lead_id": body["lead"]["lead_id"], "probability": 0.0})


async def ready(request: Request) -> JSONResponse:
    return JSONResponse({"ready": True})


app = Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/readyz", ready)])
