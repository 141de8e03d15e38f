"""The BentoML scoring service: `POST /score`, `POST /score_batch`, `GET /model`, `GET /report`,
`GET /importance`.

Run it with `bentoml serve serving.service:LeadScoring`. At start-up it loads one model bundle:
the folder named by `LEADSCORE_BUNDLE`, or else the registry's champion
(`leadscore.registry.champion_bundle_path`, configured by `MLFLOW_TRACKING_URI` and
`LEADSCORE_MODEL_NAME`).

Every score goes through `leadscore.scoring.score_lead`, the path the batch scorer uses too.

Client mistakes answer 4xx, never 5xx: a body not declared as JSON gets 415, anything else 400
with the body BentoML gives pydantic validation errors,
`{"error": "<n> validation error(s) for <Request>", "detail": [{"type", "loc", "msg"}, ...]}`,
where `loc` names the field, e.g. `["leads", 3, "created_at"]`. Mistakes only the model can
see (a non-numeric value for a numeric attribute, `as_of` before `created_at`) are raised as
the same kind of error, so clients handle one shape. Anything else is a 500.

The log names a lead only by a hash of its lead_id; request bodies are never logged.

`GET /report` (the leadership report, HTML) and `GET /importance` (the global drivers, JSON) hand
out the files training wrote into the bundle folder as they are: serving never imports training.
A bundle without them answers 404 saying so.

Checks that hold for every request live in ASGI middleware (`serving.middleware`), registered
at the end of this module: it sees the BentoML endpoints and the mounted `/model` route alike,
which makes it the place for access control too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import bentoml
from lightgbm.basic import LightGBMError
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from leadscore.bundle import IMPORTANCE_FILE, REPORT_FILE, ScoringModel, content_hash
from leadscore.scoring import LeadIn, LeadRejected, ScoreOut, score_lead
from serving.middleware import JsonBodiesOnly
from serving.schemas import ModelCard, ScoreBatchOut, ScoreBatchRequest, ScoreRequest

BUNDLE_ENV = "LEADSCORE_BUNDLE"

logger = logging.getLogger(__name__)

Location = tuple[str | int, ...]


class BundleLoadError(RuntimeError):
    """The service cannot start: no usable model bundle."""


def bundle_location() -> tuple[Path, str]:
    """Where the bundle to serve is, and how it was found (for the start-up error and log).

    `LEADSCORE_BUNDLE` wins; otherwise the registry's champion.

    Raises:
        BundleLoadError: Neither is available.
    """
    configured = os.environ.get(BUNDLE_ENV)
    if configured:
        return Path(configured), f"${BUNDLE_ENV}"
    try:
        from leadscore.registry import champion_bundle_path, registry_from_env
    except ModuleNotFoundError as exc:
        if exc.name != "leadscore.registry":
            raise
        raise BundleLoadError(
            f"{BUNDLE_ENV} is not set and this leadscore has no model registry: set {BUNDLE_ENV} to a bundle folder"
        ) from None
    registry = registry_from_env()
    try:
        path, version = champion_bundle_path(registry)
    except LookupError as exc:
        raise BundleLoadError(f"{BUNDLE_ENV} is not set and the registry has no champion: {exc}") from None
    return path, f"registry {registry.model_name} version {version}"


def load_bundle(path: Path, origin: str) -> ScoringModel:
    """Load the bundle or fail with an error naming the folder and where it came from."""
    try:
        return ScoringModel.load(path)
    except (OSError, ValueError, LightGBMError) as exc:
        raise BundleLoadError(f"cannot load the model bundle at {path} (from {origin}): {exc}") from exc


def lead_ref(lead_id: str) -> str:
    """How the log names a lead: a sha256 prefix of its lead_id (which may be an email)."""
    return content_hash(lead_id.encode("utf-8"))


def rejection(title: str, problems: Sequence[tuple[Location, str]]) -> ValidationError:
    """A client error in pydantic's shape, which BentoML answers with 400 like its own.

    Args:
        title: The request model's name, as in pydantic's own errors.
        problems: (location of the offending field, reason) pairs.
    """
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("value_error", "{reason}", {"reason": reason}), loc=loc, input=None
            )
            for loc, reason in problems
        ],
        hide_input=True,
    )


async def model_card_response(request: Request) -> JSONResponse:
    """`GET /model`: a plain route, because BentoML endpoints answer POST only."""
    service: LeadScoring = bentoml.get_current_service()
    return JSONResponse(service.model_card().model_dump(mode="json"))


def bundle_file_response(name: str, media_type: str) -> Response:
    """A file of the served bundle's folder as it is, or 404 naming the file and the model."""
    service: LeadScoring = bentoml.get_current_service()
    path = service.bundle_dir / name
    if not path.is_file():
        reason = (
            f"the bundle of model {service.model.meta.model_version} has no {name}: it was saved "
            "without explanations; retrain with `leadscore train`, or write a report with `leadscore report`"
        )
        return JSONResponse(
            {"error": "Not Found", "detail": [{"type": "not_found", "loc": [], "msg": reason}]}, status_code=404
        )
    return FileResponse(path, media_type=media_type)


async def report_response(request: Request) -> Response:
    """`GET /report`: the leadership report of the served model, one offline HTML page."""
    return bundle_file_response(REPORT_FILE, "text/html; charset=utf-8")


async def importance_response(request: Request) -> Response:
    """`GET /importance`: the served model's global drivers (`training.drivers`), JSON."""
    return bundle_file_response(IMPORTANCE_FILE, "application/json")


model_routes = Starlette(
    routes=[
        Route("/model", model_card_response, methods=["GET"]),
        Route("/report", report_response, methods=["GET"]),
        Route("/importance", importance_response, methods=["GET"]),
    ]
)


@bentoml.asgi_app(model_routes, path="/")
@bentoml.service(traffic={"timeout": 60})
class LeadScoring:
    """Scores leads with one model bundle loaded at start-up."""

    def __init__(self) -> None:
        # BentoML's server logging passes only warnings from loggers outside `bentoml`; the
        # request log is INFO. Set at start-up, not import, so importing this module configures nothing.
        logger.setLevel(logging.INFO)
        path, origin = bundle_location()
        self.model = load_bundle(path, origin)
        self.bundle_dir = path  # report.html and importance.json are served from here
        logger.info(
            "serving model %s (trained %s) from %s (%s)",
            self.model.meta.model_version,
            self.model.meta.trained_at,
            path,
            origin,
        )

    @bentoml.api
    def score(self, request: ScoreRequest, /) -> ScoreOut:
        """Score one lead."""
        started = time.perf_counter()
        out = self._score_all(
            [(("lead",), request.lead)],
            request.as_of,
            explain=request.explain,
            top_k=request.top_k,
            language=request.language,
            title=ScoreRequest.__name__,
        )[0]
        logger.info(
            "score lead=%s tier=%s warnings=%d in %.1f ms",
            lead_ref(out.lead_id),
            out.tier,
            len(out.warnings),
            1000 * (time.perf_counter() - started),
        )
        return out

    @bentoml.api
    def score_batch(self, request: ScoreBatchRequest, /) -> ScoreBatchOut:
        """Score many leads at one `as_of` (now when omitted); a bad lead rejects the batch."""
        started = time.perf_counter()
        results = self._score_all(
            [(("leads", i), lead) for i, lead in enumerate(request.leads)],
            request.as_of if request.as_of is not None else datetime.now(UTC),
            explain=request.explain,
            top_k=request.top_k,
            language=request.language,
            title=ScoreBatchRequest.__name__,
        )
        logger.info(
            "score_batch leads=%d (%s) in %.1f ms",
            len(results),
            " ".join(lead_ref(out.lead_id) for out in results),
            1000 * (time.perf_counter() - started),
        )
        return ScoreBatchOut(model_version=self.model.meta.model_version, results=results)

    def model_card(self) -> ModelCard:
        """What `GET /model` answers."""
        meta = self.model.meta
        return ModelCard(
            model_version=meta.model_version,
            trained_at=meta.trained_at,
            horizon_days=meta.horizon_days,
            metrics=meta.metrics,
            feature_names=meta.feature_names,
            tiers=meta.tiers,
            mql_probability=meta.mql_probability,
            grid=meta.grid.name,
        )

    def _score_all(
        self,
        leads: Sequence[tuple[Location, LeadIn]],
        as_of: datetime | None,
        *,
        explain: bool,
        top_k: int,
        language: str,
        title: str,
    ) -> list[ScoreOut]:
        """Score leads in order, or reject them all, naming every lead that cannot be scored.

        Args:
            leads: (where the lead is in the request body, lead) pairs.
            as_of: Passed to `score_lead`.
            explain, top_k, language: Passed to `score_lead`.
            title: The request model's name, for the error.

        Raises:
            ValidationError: Some lead cannot be scored (BentoML answers 400).
        """
        results: list[ScoreOut] = []
        problems: list[tuple[Location, str]] = []
        for where, lead in leads:
            try:
                results.append(score_lead(self.model, lead, as_of, with_reasons=explain, top_k=top_k, language=language))
            except LeadRejected as exc:  # the client's mistake, named; any other error is ours: a 500
                problems.append(((*where, *exc.field.split(".")), str(exc)))
        if problems:
            raise rejection(title, problems)
        return results

LeadScoring.add_asgi_middleware(JsonBodiesOnly)
