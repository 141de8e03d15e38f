"""`/metrics` labelled by route, so that made-up paths cannot grow it.

BentoML's traffic metrics (`RunnerTrafficMetricsMiddleware`, the outermost middleware of a
service's app) label every request with its raw path: each unique path, authenticated or not,
adds about twenty series, and a scrape of a service probed with a few thousand paths is
megabytes. `RouteLabelledMetrics` is that middleware with one change: the label is the
template of the route the path belongs to (`/score`, `/leads/{lead_id}/score`), or
`UNKNOWN_ROUTE` for a path no route serves. The request itself goes on with its own path.

The routes are read once from the app: its own routes by their templates, a mounted FastAPI
app by the paths of its OpenAPI document, any other mount as `<prefix>/{path}`.

`label_metrics_by_route` puts it in place of BentoML's class; BentoML builds a service's
middleware when the worker turns the service into an app, after importing the service's
module, which is where `serving.service` calls it.
"""

from __future__ import annotations

from re import Pattern
from typing import Any

from bentoml._internal.server.http import instruments
from fastapi import FastAPI
from starlette.routing import Mount, Route, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

UNKNOWN_ROUTE = "/{unknown}"
_RAW_PATH = "leadscore.path"  # where the real path waits while BentoML's middleware reads the label


def route_templates(routes: list[Any], prefix: str = "") -> list[str]:
    """The path templates an app's routes serve, e.g. ["/livez", "/score", "/static_content/{path}"]."""
    templates: list[str] = []
    for route in routes:
        if isinstance(route, Mount):
            if isinstance(route.app, FastAPI):
                templates.extend(prefix + route.path + path for path in route.app.openapi().get("paths", {}))
            else:
                templates.append(f"{prefix}{route.path}/{{path}}")
        elif isinstance(route, Route):
            templates.append(prefix + route.path)
    return list(dict.fromkeys(templates))


class RouteLabels:
    """Path -> the template of the route that serves it, or `UNKNOWN_ROUTE`."""

    def __init__(self, templates: list[str]) -> None:
        self._patterns: list[tuple[Pattern[str], str]]
        # A template with a catch-all ({path}) matches the rest of the path, slashes included.
        self._patterns = [(compile_path(t.replace("{path}", "{path:path}"))[0], t) for t in templates]

    def of(self, path: str) -> str:
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return UNKNOWN_ROUTE


class _RealPath:
    """Hands the app the request's own path again, after the metrics middleware read its label."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _RAW_PATH in scope:
            scope = {key: value for key, value in scope.items() if key != _RAW_PATH} | {"path": scope[_RAW_PATH]}
        await self.app(scope, receive, send)


class RouteLabelledMetrics(instruments.RunnerTrafficMetricsMiddleware):
    """BentoML's traffic metrics with the `endpoint` label a route template, never a raw path."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        super().__init__(_RealPath(app), **options)
        self._labels: RouteLabels | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "app" in scope:
            if self._labels is None:  # the first request: every route is declared by now
                self._labels = RouteLabels(route_templates(scope["app"].routes))
            label = self._labels.of(scope["path"])
            if label != scope["path"]:
                scope = {**scope, "path": label, _RAW_PATH: scope["path"]}
        await super().__call__(scope, receive, send)


def label_metrics_by_route() -> None:
    """Have BentoML build services' apps with `RouteLabelledMetrics` for its traffic metrics."""
    instruments.RunnerTrafficMetricsMiddleware = RouteLabelledMetrics  # type: ignore[misc, assignment]
