"""The BentoML floor: `bentoml serve` of the HTTP floor's own app, and nothing else.

The minimal Starlette app of `benchmarks.bare_http` (parse the JSON body, answer two fields),
mounted in an empty BentoML service with `bentoml.asgi_app` as the scoring service mounts its
API. Called beside the scoring service and the bare app, with the same body at the same pace, its
latency less the bare app's is what BentoML's own server stack charges a request (its worker
process, tracing, traffic metrics, access log and context middlewares) before any route of
leadscore runs. Run: `bentoml serve benchmarks.bare_bentoml:BareBentoML` from the project root.
"""

from __future__ import annotations

import bentoml

from benchmarks.bare_http import app


@bentoml.asgi_app(app, path="/")
@bentoml.service(traffic={"timeout": 60})
class BareBentoML:
    """No model, no route of its own: BentoML's stack around the bare app."""
