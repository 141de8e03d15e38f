"""The service's OpenAPI document, served at `/docs.json` (and behind the Swagger page `/`).

BentoML writes a document for the endpoints it routes, but it cannot know what the service
adds around them, and it simplifies the pydantic schemas (an optional field loses its `null`).
`service_document` starts from BentoML's document and states, from the service's own pydantic
models, what the service really answers:

- request and response bodies of `/score` and `/score_batch` as pydantic writes them
  (OpenAPI 3.1 uses JSON Schema, so they need no translation);
- every refusal with its status: 400 (validation), 401 (no or bad key), 403 (role), 413
  (body size), 415 (not JSON), with the error body `{"error", "detail": [{"type", "loc", "msg"}]}`;
- the API key as an HTTP bearer scheme, on every endpoint that needs one;
- the mounted routes BentoML does not document: `/model`, `/report`, `/importance`, `/admin/reload`.

tests/test_service_contract.py runs schemathesis against this document on the real server.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from model.scoring import ScoreOut
from serving.schemas import ModelCard, ReloadOut, ReloadRequest, ScoreBatchOut, ScoreBatchRequest, ScoreRequest

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "apiKey"
REF = "#/components/schemas/{model}"
ERROR = "Error"

ERROR_SCHEMAS: dict[str, Any] = {
    ERROR: {
        "type": "object",
        "title": ERROR,
        "description": "A refusal: what kind, and which field (`loc`) is at fault.",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "Title, e.g. `1 validation error for ScoreRequest`."},
            "detail": {"type": "array", "items": {"$ref": REF.format(model="ErrorDetail")}},
        },
    },
    "ErrorDetail": {
        "type": "object",
        "title": "ErrorDetail",
        "required": ["type", "loc", "msg"],
        "properties": {
            "type": {"type": "string"},
            "loc": {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "description": "Path of the offending field in the request, e.g. `[\"leads\", 3, \"created_at\"]`.",
            },
            "msg": {"type": "string"},
            "url": {"type": "string"},
        },
    },
}

REFUSALS = {
    400: "Invalid request: `detail[].loc` names each offending field",
    401: "No API key, or one that is not valid (`Authorization: Bearer <key>`)",
    403: "The API key's role does not allow this endpoint",
    404: "Not found",
    409: "Conflicts with the service's state",
    413: "Request body over the size limit (LEADSCORE_MAX_BODY_BYTES, 5 MiB by default)",
    415: "Body not declared as JSON",
    422: "The bundle failed its checks; the service keeps the model it had",
}


def _schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """(model -> reference to its schema, every schema by name), from the pydantic models."""
    models: list[tuple[type[BaseModel], str]] = [
        (ScoreRequest, "validation"),
        (ScoreBatchRequest, "validation"),
        (ReloadRequest, "validation"),
        (ScoreOut, "serialization"),
        (ScoreBatchOut, "serialization"),
        (ModelCard, "serialization"),
        (ReloadOut, "serialization"),
    ]
    refs, definitions = models_json_schema(models, ref_template=REF)
    return {model.__name__: refs[(model, mode)] for model, mode in models}, definitions["$defs"]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _responses(ok: dict[str, Any], *refusals: int) -> dict[str, Any]:
    error = _json({"$ref": REF.format(model=ERROR)})
    return {"200": ok, **{str(status): {"description": REFUSALS[status], "content": error} for status in refusals}}


def service_document(bentoml_document: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document (`LeadScoring.openapi_spec.asdict()`), corrected.

    Returns:
        A new OpenAPI 3.1 document; the argument is not changed.
    """
    document = copy.deepcopy(bentoml_document)
    refs, schemas = _schemas()
    document["openapi"] = OPENAPI_VERSION
    document["info"]["title"] = "leadscore"
    document["info"]["description"] = (
        "Scores CRM leads with a LightGBM model beside the team's point grid, and says why. "
        "Every endpoint but health and documentation needs an API key: `Authorization: Bearer <key>`; "
        "role `score` for scoring and reading the model, `admin` also for `/admin/reload`."
    )
    components = document.setdefault("components", {})
    components["schemas"] = {**schemas, **ERROR_SCHEMAS}
    components["securitySchemes"] = {
        SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description": "An API key (LEADSCORE_API_KEYS)."}
    }
    secured = [{SECURITY_SCHEME: []}]
    paths = document["paths"]
    for path, request, response in (
        ("/score", "ScoreRequest", "ScoreOut"),
        ("/score_batch", "ScoreBatchRequest", "ScoreBatchOut"),
    ):
        operation = paths[path]["post"]
        operation["requestBody"] = {"required": True, "content": _json(refs[request])}
        operation["responses"] = _responses(
            {"description": "Scored", "content": _json(refs[response])}, 400, 401, 403, 413, 415
        )
        operation["security"] = secured
    paths["/model"] = {
        "get": {
            "tags": ["Service APIs"],
            "description": "The model being served: version, training date, test metrics, features, tiers.",
            "security": secured,
            "responses": _responses({"description": "The model card", "content": _json(refs["ModelCard"])}, 401, 403),
        }
    }
    paths["/report"] = {
        "get": {
            "tags": ["Service APIs"],
            "description": "The leadership report of the served model (one offline HTML page).",
            "security": secured,
            "responses": _responses(
                {"description": "The report", "content": {"text/html": {"schema": {"type": "string"}}}}, 401, 403, 404
            ),
        }
    }
    paths["/importance"] = {
        "get": {
            "tags": ["Service APIs"],
            "description": "The served model's global drivers.",
            "security": secured,
            "responses": _responses(
                {"description": "The drivers", "content": _json({"type": "object"})}, 401, 403, 404
            ),
        }
    }
    paths["/admin/reload"] = {
        "post": {
            "tags": ["Service APIs"],
            "description": (
                "Load a model bundle in the background, check it (format, a smoke prediction, feature "
                "spec compatible with the served model) and swap it in; requests in flight finish on "
                "the old model. Empty body: load again from where the model came from (the registry's "
                "champion, or LEADSCORE_BUNDLE). Role admin."
            ),
            "security": secured,
            "requestBody": {"required": False, "content": _json(refs["ReloadRequest"])},
            "responses": _responses(
                {"description": "Swapped", "content": _json(refs["ReloadOut"])}, 400, 401, 403, 409, 413, 415, 422
            ),
        }
    }
    return document
