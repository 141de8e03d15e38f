"""The FastAPI app the service mounts (`bentoml.asgi_app`): its routes' declarations and its document.

The endpoints are methods of `serving.service.LeadScoring` declared on `api` (BentoML's FastAPI
class views), so FastAPI writes the OpenAPI document served at `/docs.json` (and read by the
Swagger page BentoML serves at `/`) from what it routes: the request and response models of
`serving.schemas` and `model.scoring` with their limits, the refusals each endpoint declares
(`responses`) with the error body `serving.schemas.ErrorBody`, and the API key as an HTTP
bearer scheme (`bearer`). Two additions to FastAPI's own document (`service_document`):
BentoML's health endpoints, which BentoML routes itself, from BentoML's own document; and no
`422 Validation Error` where FastAPI assumes one, since validation errors answer 400 here.

Bodies are validated as BentoML validated them before the move to FastAPI: by pydantic reading
the JSON itself (`JsonBodyRoute`), so that `loc` names the field as sent (`["leads", 3,
"created_at"]`, no `"body"` prefix), an empty body counts as `{}`, and a malformed one answers
`Invalid JSON: ...`. Every error answers in the shape `{"error", "detail": [{"type", "loc", "msg"}]}`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar, get_args

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from model.settings import DEFAULT_MAX_BODY_BYTES
from serving.schemas import MAX_BATCH_LEADS, ErrorBody

M = TypeVar("M", bound=BaseModel)

SECURITY_SCHEME = "apiKey"
INFRA_TAG = "Infrastructure"  # BentoML's tag of its health and metrics endpoints
FASTAPI_422 = "Validation Error"  # the description of the 422 FastAPI adds by itself

bearer = HTTPBearer(
    scheme_name=SECURITY_SCHEME, description="An API key (LEADSCORE_API_KEYS).", auto_error=False
)
"""Declares the key in the document; `serving.middleware.ApiKeyAuth` checks it (for every path)."""

REFUSALS: dict[int, str] = {
    400: "Invalid request: `detail[].loc` names each offending field",
    401: "No API key, or one that is not valid (`Authorization: Bearer <key>`)",
    403: "The API key's role does not allow this endpoint",
    404: "The served bundle has no such file",
    409: "A reload is running, or a registry version was asked of a service serving a bundle folder",
    413: (
        f"Request body over the size limit (LEADSCORE_MAX_BODY_BYTES, {DEFAULT_MAX_BODY_BYTES:,} bytes by default; "
        f"a batch holds at most {MAX_BATCH_LEADS:,} leads)"
    ),
    415: "Body not declared as JSON (`Content-Type: application/json`)",
    422: "The bundle failed its checks; the service keeps the model it had",
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route: each status with its description and the error body."""
    return {status: {"model": ErrorBody, "description": REFUSALS[status]} for status in statuses}


def error_response(status: int, title: str, detail: Sequence[Mapping[str, Any]]) -> JSONResponse:
    return JSONResponse({"error": title, "detail": detail}, status_code=status)


def validation_response(exc: ValidationError) -> JSONResponse:
    """400 with pydantic's errors, as BentoML answered them (without inputs, context or URLs)."""
    detail = exc.errors(include_url=False, include_context=False, include_input=False)
    return error_response(400, f"{exc.error_count()} validation error for {exc.title}", list(detail))


def validated_body(model: type[M], body: bytes) -> M:
    """`body` read by pydantic as `model` (JSON mode); an empty body is `{}`.

    Raises:
        ValidationError: What pydantic refuses, `Invalid JSON` included.
    """
    return model.model_validate_json(body if body.strip() else b"{}")


def _body_model(annotation: Any) -> type[BaseModel] | None:
    candidates = (annotation, *get_args(annotation))
    return next((c for c in candidates if inspect.isclass(c) and issubclass(c, BaseModel)), None)


class JsonBodyRoute(APIRoute):
    """A route whose JSON body pydantic validates from the bytes (JSON mode) before FastAPI's handler.

    FastAPI parses the body with `json.loads` and validates the Python objects; pydantic's own
    JSON reading refuses what JSON forbids (a lone surrogate, nesting too deep) with its errors,
    and gives them the `loc` of the request model. A body that passes is then handed to FastAPI
    as usual. An empty body is `{}` when the body is required, nothing when it is optional.

    The body is read and validated once: the validated model is what FastAPI then reads as the
    request's JSON (`Request.json()` returns it), and pydantic hands an instance of the model
    on without validating it again. Parsing and validating a lead with 100 interactions twice
    cost about 1 ms a request (the note of issue 16 has the profile).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        model = _body_model(self.body_field.field_info.annotation) if self.body_field is not None else None
        if model is None or self.body_field is None:
            return handler
        required = self.body_field.field_info.is_required()
        # The model is the whole body (not one field of it): FastAPI can take the validated instance.
        whole_body = len(self.dependant.body_params) == 1 and not getattr(self.body_field.field_info, "embed", False)

        async def validated_first(request: Request) -> Response:
            body = await request.body()
            if body.strip() or required:
                try:
                    validated = validated_body(model, body)
                except ValidationError as exc:
                    return validation_response(exc)
                if whole_body:
                    request._json = validated  # what `Request.json()` returns: read once, not parsed again
            return await handler(request)

        return validated_first


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    # Reached only by what pydantic's JSON reading accepted and FastAPI's validation did not.
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"type": e["type"], "loc": list(e["loc"][1:] if e["loc"][:1] == ("body",) else e["loc"]), "msg": e["msg"]}
        for e in exc.errors()
    ]
    return error_response(400, f"{len(detail)} validation error for the request", detail)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    # A lead only the model can refuse (`serving.service.rejection`): the same shape as the others.
    assert isinstance(exc, ValidationError)
    return validation_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = "method_not_allowed" if exc.status_code == 405 else "http_error"
    response = error_response(exc.status_code, str(exc.detail), [{"type": kind, "loc": [], "msg": str(exc.detail)}])
    response.headers.update(exc.headers or {})
    return response


def create_api(title: str, description: str, version: str) -> FastAPI:
    """The app the service's endpoints are declared on; its document is `service_document(app)`.

    No Swagger or ReDoc page of FastAPI's: BentoML serves its page at `/`, reading `/docs.json`.
    """
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        openapi_url="/docs.json",
        docs_url=None,
        redoc_url=None,
        strict_content_type=False,  # no Content-Type: read as JSON, as BentoML did
    )
    app.router.route_class = JsonBodyRoute
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    return app


def service_document(app: FastAPI, infrastructure: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's OpenAPI document of `app`, with BentoML's health endpoints and without unanswered 422s.

    Args:
        app: The mounted FastAPI app.
        infrastructure: BentoML's own document of the service (`LeadScoring.openapi_spec.asdict()`):
            its paths tagged `Infrastructure` (/livez, /healthz, /readyz, /metrics) are added.

    Returns:
        The document (OpenAPI 3.1), cached on `app` like FastAPI's own.
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for item in document["paths"].values():
        for operation in item.values():
            # FastAPI adds its own 422 to every route with a body; validation answers 400 here.
            if operation["responses"].get("422", {}).get("description") == FASTAPI_422:
                del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        document.get("components", {}).get("schemas", {}).pop(name, None)
    for path, item in infrastructure["paths"].items():
        if any(INFRA_TAG in operation.get("tags", []) for operation in item.values()):
            document["paths"][path] = item
    app.openapi_schema = document
    return document

