"""The BentoML scoring service: `POST /score`, `POST /score_batch`, `GET /model`, `GET /report`,
`GET /importance`.

Run it with `bentoml serve serving.service:LeadScoring`. At start-up it loads one model bundle:
the folder named by `LEADSCORE_BUNDLE`, or else the registry's champion
(`model.registry.champion_bundle_path`, configured by `MLFLOW_TRACKING_URI` and
`LEADSCORE_MODEL_NAME`).

Every score goes through `model.scoring.score_lead`, the path the batch scorer uses too;
`POST /score_batch` reads its leads one by one and scores them at once
(`model.scoring.score_read_leads`), with the same answers. `POST /crm/hubspot/action` and
`POST /crm/salesforce/outbound` answer CRMs in their own formats (`serving.crm`).

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

The endpoints are FastAPI routes declared on the methods of `LeadScoring` (`serving.api.api`,
mounted with `bentoml.asgi_app`), so FastAPI writes the OpenAPI document at `/docs.json` from
them; BentoML serves the health endpoints, `/metrics` and the Swagger page `/`.

Checks that hold for every request live in ASGI middleware (`serving.middleware`), registered
at the end of this module: it sees BentoML's routes and the mounted app alike, which makes it
the place for access control too. API keys and roles: `serving.auth`; body size:
`LEADSCORE_MAX_BODY_BYTES` (5 MiB). Settings: `model.settings`.

Hot swap: the served model is one reference (`LeadScoring.served`) that a request reads once,
at its start, so a request in flight finishes on the model it started with. `POST /admin/reload`
(role admin) and, when serving the registry's champion, a poll of the `champion` alias every
`LEADSCORE_POLL_SECONDS` (30; 0 = never) load a bundle in a worker thread, check it
(`check_bundle`) and swap the reference; a bundle that fails its check is refused and the
old model keeps serving. A bundle is untrusted until checked: a damaged model file can make
LightGBM end the process, so every bundle, at start-up too, is first loaded and checked in a
child process (`model.check.check_in_child`) and loaded here only if the child succeeded.

`/metrics` labels requests by route, never by raw path (`serving.metrics`): a path no route
serves counts as `/{unknown}`, so unauthenticated requests to made-up paths add no series.

Score log: with `LEADSCORE_SCORE_LOG` set (a file path or a SQLAlchemy URL), every scored lead
is recorded without personal data (`model.scorelog`) for `leadscore monitor` and
`leadscore forget`. The server log and the score log name a lead by the same keyed hash.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
import bentoml
from bentoml.exceptions import BentoMLException
from fastapi import Body, Query, Request, Security
from lightgbm.basic import LightGBMError
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, JSONResponse, Response

from features.spec import FeatureSpec
from model.bundle import IMPORTANCE_FILE, REPORT_FILE, ScoringModel
from model.check import BundleInvalid, bundle_check, check_in_child
from model.leadstore import LeadStore, UnknownLead, lead_store_url, open_lead_store
from model.scorelog import (
    ScoreLog,
    ScoreLogError,
    ScoreRecord,
    lead_key,
    lead_pseudonym,
    open_score_log,
)
from model.scoring import (
    LeadIn,
    LeadRead,
    LeadRejected,
    ScoreOut,
    batch_as_of,
    read_lead,
    score_lead_with_features,
    score_read_leads,
)
from model.settings import DEFAULT_MAX_BODY_BYTES, Settings, env_name, load_settings
from serving.accounts import ACCOUNT_RESPONSES, AccountModels, AccountQuery, AccountScoreOut, not_found, score_stored_account
from serving.alerts import AlertDelivery, load_alert_config
from serving.api import bearer, create_api, refusals, service_document, validated_body, validation_response
from serving.auth import HUBSPOT_PATH, SALESFORCE_PATH, ApiKeys, load_api_keys
from serving.crm import HUBSPOT_RESPONSES, SALESFORCE_RESPONSES, CrmEndpoints, read_crm_config, score_with_store
from serving.crm_formats import XML_MEDIA_TYPES, HubSpotActionOut
from serving.events import LEAD_RESPONSES, EventBatch, EventsOut, LeadScoreQuery, ingest, lead_not_found, score_stored
from serving.metrics import label_metrics_by_route
from serving.middleware import ApiKeyAuth, BodySizeLimit, DirectRoute, JsonBodiesOnly, JsonNotFound, refusal
from serving.schemas import ModelCard, ReloadOut, ReloadRequest, ScoreBatchOut, ScoreBatchRequest, ScoreRequest
from serving.timeouts import cancel_timers_when_answered
from serving.tracing import trace_requests_only

BUNDLE_ENV = env_name("bundle")

logger = logging.getLogger(__name__)

Location = tuple[str | int, ...]


class BundleLoadError(RuntimeError):
    """The service cannot start: no usable model bundle."""


class BundleRejected(ValueError):
    """A bundle that failed its checks before a swap (`POST /admin/reload` answers 422)."""


class ReloadConflict(RuntimeError):
    """A reload that cannot run now or here (`POST /admin/reload` answers 409)."""


@dataclass(frozen=True)
class Served:
    """The model being served, and where it came from: swapped as one reference.

    Attributes:
        model: The loaded bundle.
        bundle_dir: Its folder (report.html and importance.json are served from here).
        origin: How it was found, for logs and `POST /admin/reload` answers.
        registry_version: Its version in the model registry, None for a bundle folder.
    """

    model: ScoringModel
    bundle_dir: Path
    origin: str
    registry_version: str | None


def bundle_location() -> tuple[Path, str, str | None]:
    """Where the bundle to serve is, how it was found (for the start-up error and log), and its
    registry version (None for `LEADSCORE_BUNDLE`).

    `LEADSCORE_BUNDLE` wins; otherwise the registry's champion.

    Raises:
        BundleLoadError: Neither is available.
    """
    configured = load_settings().bundle
    if configured is not None:
        return configured, f"${BUNDLE_ENV}", None
    try:
        from model.registry import RegistryError, champion_bundle_path, registry_from_env
    except ModuleNotFoundError as exc:
        if exc.name != "model.registry":
            raise
        raise BundleLoadError(
            f"{BUNDLE_ENV} is not set and this leadscore has no model registry: set {BUNDLE_ENV} to a bundle folder"
        ) from None
    registry = registry_from_env()
    try:
        path, version = champion_bundle_path(registry)
    except LookupError as exc:
        raise BundleLoadError(f"{BUNDLE_ENV} is not set and the registry has no champion: {exc}") from None
    except RegistryError as exc:
        raise BundleLoadError(
            f"{BUNDLE_ENV} is not set and the registry's champion cannot be read: {exc}; set {BUNDLE_ENV} to a "
            "bundle folder, or MLFLOW_TRACKING_URI to the registry"
        ) from None
    return path, f"registry {registry.model_name} version {version}", version


def load_bundle(path: Path, origin: str) -> ScoringModel:
    """Load the bundle or fail with an error naming the folder and where it came from."""
    try:
        return ScoringModel.load(path)
    except (OSError, ValueError, LightGBMError) as exc:
        raise BundleLoadError(f"cannot load the model bundle at {path} (from {origin}): {exc}") from exc


def load_checked_bundle(path: Path, origin: str) -> ScoringModel:
    """Load a bundle here only after a child process loaded and checked it (`model.check.check_in_child`).

    A model file that crashes LightGBM ends the child, not this process.

    Raises:
        BundleLoadError: The child refused the bundle or crashed, or it cannot be loaded here,
            naming the folder, where it came from and the problem.
    """
    try:
        check_in_child(path)
    except BundleInvalid as exc:
        raise BundleLoadError(f"the model bundle at {path} (from {origin}) cannot serve: {exc}") from None
    return load_bundle(path, origin)


def spec_incompatibilities(candidate: FeatureSpec, served: FeatureSpec) -> list[str]:
    """Why clients of the served model could not feed the candidate, or an empty list.

    Clients send the attributes the served model reads. A candidate that reads an attribute
    they do not send would score it as unknown for every lead, silently; one that reads an
    attribute as a number where it was a category (or back) would refuse their requests.
    Reading fewer attributes, or other interaction types, is fine: extras are reported in
    `warnings` and unknown types counted as other.
    """
    kinds = {name: "categorical" for name in served.categorical} | {name: "numeric" for name in served.numeric}
    wanted = {name: "categorical" for name in candidate.categorical} | {name: "numeric" for name in candidate.numeric}
    problems = []
    unsent = sorted(name for name in wanted if name not in kinds)
    if unsent:
        problems.append(f"reads attributes the served model does not, which clients do not send yet: {unsent}")
    changed = sorted(
        f"{name} ({kinds[name]} -> {kind})" for name, kind in wanted.items() if kinds.get(name, kind) != kind
    )
    if changed:
        problems.append(f"reads attributes as another kind: {changed}")
    if candidate.email_column is not None and candidate.email_column != served.email_column:
        problems.append(
            f"reads the email from {candidate.email_column!r}, the served model from {served.email_column!r}"
        )
    return problems


def check_bundle(candidate: ScoringModel, served: ScoringModel | None) -> list[str]:
    """Refuse a bundle that should not serve: wrong in meaning, a failed smoke prediction, or
    clients it cannot serve.

    The bundle format and the model file were checked by `ScoringModel.load`;
    `model.check.bundle_check` reads bundle.json for its meaning (feature order, score
    quantiles, tiers, calibration) and scores the smoke lead with reasons (every code path of
    a request), comparing its probability with the one training stored. When a model is
    already serving, the feature specs are compared too (`spec_incompatibilities`).

    Returns:
        Notes for the log: what could not be checked (an older bundle without a smoke probability).

    Raises:
        BundleRejected: Saying why.
    """
    found = bundle_check(candidate)
    if found.problems:
        raise BundleRejected(f"model {candidate.meta.model_version} cannot serve: {'; '.join(found.problems)}")
    if served is not None:
        problems = spec_incompatibilities(candidate.spec, served.spec)
        if problems:
            raise BundleRejected(
                f"model {candidate.meta.model_version} {'; '.join(problems)}: restart the service with it to change "
                "what clients send"
            )
    return found.notes


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


def bundle_file_response(service: LeadScoring, name: str, media_type: str) -> Response:
    """A file of the served bundle's folder as it is, or 404 naming the file and the model."""
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


api = create_api(
    title="leadscore",
    version="1",
    description=(
        "Scores CRM leads with a LightGBM model beside the team's point grid, and says why. "
        "Every endpoint but health and documentation needs an API key: `Authorization: Bearer <key>`; "
        "role `score` for scoring and reading the model, `admin` also for `/admin/reload`."
    ),
)
KEY = [Security(bearer)]  # declares the key; `ApiKeyAuth` checks it
TAGS: list[str | Any] = ["Service APIs"]
CRM_TAGS: list[str | Any] = ["CRM"]


def _freeze_long_lived() -> None:
    """Take the objects alive now (libraries, the model) out of the garbage collector's scans.

    They live as long as the process. Left in the oldest generation, every full collection
    walks them all: on the benchmark machine a full collection of the start-up heap (~220k
    objects) stopped one request in ~500 for 120-180 ms, which made the p99 of POST /score.
    Frozen, a full collection scans only what requests allocate. Called at start-up and after
    a reload. Nothing is unfrozen: a collection of the whole heap after a reload stopped every
    request for 370-430 ms; this one walks only what is not frozen yet (the new model, about a
    thousand objects, and what requests keep: 10-20 ms in the benchmark's worker, py-spy). The
    swapped-out model stays frozen until its last request ends and is then freed by reference
    counting: it holds no reference cycles (tests/test_service_ops.py checks that it is freed).
    """
    gc.collect()
    gc.freeze()


# How often a reload's thread is asked to hand the GIL over (Python's default: every 5 ms).
RELOAD_SWITCH_INTERVAL_S = 0.0005


@contextmanager
def _gil_handed_over_often() -> Iterator[None]:
    """While a reload loads and checks a bundle in this process, hand the GIL over every 0.5 ms.

    Checking a bundle here tabulates its TreeSHAP and scores the smoke lead: about 0.2 s of
    Python that holds the GIL. A request thread takes the GIL back after every pause (its
    socket, LightGBM's predict) and each time may wait a whole switch interval behind the
    reload: beside a TreeSHAP build, scoring one lead took up to 19-42 ms with Python's
    interval, 14-18 ms with this one (1.4 ms alone).
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(RELOAD_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@bentoml.asgi_app(api, path="/")
@bentoml.service(traffic={"timeout": 60})
class LeadScoring:
    """Scores leads with one model bundle at a time, loaded at start-up and swapped by reloads."""

    def __init__(self) -> None:
        # BentoML's server logging passes only warnings from loggers outside `bentoml`; the
        # request log is INFO. Set at start-up, not import, so importing this module configures nothing.
        logger.setLevel(logging.INFO)
        settings: Settings = load_settings()
        # MLflow keeps its SQL connections open per URI: a registry file restored by renaming
        # (cp saved.db tmp && mv tmp mlflow.db) stays unseen behind them, and every poll fails
        # until a restart. Without a pool each poll (one query) opens the file as it is now.
        os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
        self.poll_seconds = settings.poll_seconds
        self.max_body_bytes = settings.max_body_bytes
        self.api_keys: ApiKeys = load_api_keys()
        logger.info("API keys from %s", self.api_keys.source)
        if self.api_keys.created_key is not None:
            logger.warning(
                "no API key was configured: created one with the role admin, shown once here and kept in "
                "%s: %s (send it as Authorization: Bearer <key>)",
                self.api_keys.source.split(" ")[0],
                self.api_keys.created_key,
            )
        if self.api_keys.warning:
            logger.warning("API keys: %s", self.api_keys.warning)
        self.lead_key = lead_key()
        self.score_log: ScoreLog | None = open_score_log(settings.score_log) if settings.score_log else None
        if self.score_log is not None:
            logger.info("score log: %s", self.score_log.describe())
        # What events and CRMs tell about leads, their last scores and the alert outbox (`model.leadstore`),
        # drained by a thread of this process (`serving.alerts`).
        self.lead_store: LeadStore = open_lead_store(lead_store_url(settings))
        self.account_models = AccountModels()  # the served bundle's optional account model, loaded on first use
        alerts = load_alert_config(settings)
        self.alert_policy = alerts.policy()
        self.delivery = AlertDelivery(self.lead_store, alerts)
        if self.alert_policy.targets or self.lead_store.outbox_counts().pending:  # alerts queued earlier are delivered too
            self.delivery.start()
        logger.info("lead store: %s; alerts to %d target(s)", self.lead_store.describe(), len(self.alert_policy.targets))
        self.crm = CrmEndpoints(
            settings, read_crm_config(settings.crm_config), scoring=score_with_store(self.lead_store, self.alert_policy),
            record=self._log_scores, lead_ref=self.lead_ref,
        )  # fmt: skip
        logger.info("CRM endpoints: %s", self.crm.describe())
        path, origin, version = bundle_location()
        model = load_checked_bundle(path, origin)
        try:
            notes = check_bundle(model, None)
        except BundleRejected as exc:
            raise BundleLoadError(f"the model bundle at {path} (from {origin}) cannot serve: {exc}") from exc
        for note in notes:
            logger.warning("bundle check: %s", note)
        self.served = Served(model, path, origin, version)
        self.from_registry = version is not None  # the mode is fixed at start: a reload does not change it
        logger.info(
            "serving model %s (trained %s) from %s (%s)", model.meta.model_version, model.meta.trained_at, path, origin
        )
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        if self.from_registry and self.poll_seconds > 0:
            threading.Thread(target=self._follow_champion, name="leadscore-champion-poll", daemon=True).start()
            logger.info("following the registry's champion every %d s", self.poll_seconds)
        _freeze_long_lived()

    # The served model, read once per request: `served` is swapped whole by a reload.
    @property
    def model(self) -> ScoringModel:
        return self.served.model

    @property
    def bundle_dir(self) -> Path:
        return self.served.bundle_dir

    def lead_ref(self, lead_id: str) -> str:
        """How logs name a lead: the keyed hash of its lead_id (which may be an email)."""
        return lead_pseudonym(lead_id, self.lead_key)

    # The route is `score` below the class: a method route gets its instance from a dependency
    # FastAPI calls in a worker thread, a hop per request (issue 16's profile).
    async def score(self, request: ScoreRequest) -> ScoreOut | Response:
        """`POST /score` (the route below the class) on this instance."""
        # A lead in the body is scored on the event loop: a millisecond or two of CPU, cheaper there
        # than the hop to a worker thread and back (0.6 ms a request, profiled for issue 16). A
        # lead of the lead store waits on its database: that runs in a worker thread.
        started = time.perf_counter()
        model = self.served.model  # once: a swap during this request does not change its model
        if request.lead_id is not None:
            return await run_in_threadpool(
                self._score_stored, model, request.lead_id,
                LeadScoreQuery(as_of=request.as_of, explain=request.explain, top_k=request.top_k, language=request.language),
                ScoreRequest.__name__, ("lead_id",),
            )  # fmt: skip
        assert request.lead is not None  # one of the two: ScoreRequest checks it
        scored = self._score_all(
            model,
            [(("lead",), request.lead)],
            request.as_of,
            explain=request.explain,
            top_k=request.top_k,
            language=request.language,
            title=ScoreRequest.__name__,
        )
        self._log_scores(scored)
        out = scored[0][0]
        logger.info(
            "score lead=%s tier=%s warnings=%d in %.1f ms",
            self.lead_ref(out.lead_id),
            out.tier,
            len(out.warnings),
            1000 * (time.perf_counter() - started),
        )
        return out

    @api.post("/score_batch", tags=TAGS, dependencies=KEY, responses=refusals(400, 401, 403, 413, 415))
    def score_batch(self, request: ScoreBatchRequest) -> ScoreBatchOut:
        """Score many leads at one `as_of` (now when omitted); a bad lead rejects the batch."""
        started = time.perf_counter()
        model = self.served.model  # once: every lead of the batch is scored by the same model
        # Now, or the latest creation time when a client's clock runs a little ahead of ours.
        as_of = request.as_of or batch_as_of(model, request.leads)
        scored = self._score_all(
            model,
            [(("leads", i), lead) for i, lead in enumerate(request.leads)],
            as_of,
            explain=request.explain,
            top_k=request.top_k,
            language=request.language,
            title=ScoreBatchRequest.__name__,
            vectorised=True,
        )
        self._log_scores(scored)
        results = [out for out, _features in scored]
        logger.info(
            "score_batch leads=%d (%s) in %.1f ms",
            len(results),
            " ".join(self.lead_ref(out.lead_id) for out in results),
            1000 * (time.perf_counter() - started),
        )
        return ScoreBatchOut(model_version=model.meta.model_version, results=results)

    @api.post("/events", tags=TAGS, dependencies=KEY, status_code=202, responses=refusals(400, 401, 403, 413, 415))
    def events(self, request: EventBatch) -> EventsOut:
        """Take a Segment batch (`identify` -> attributes, `track` -> interactions, `group` -> account) into the
        lead store, once per messageId; score the touched leads again and queue their alerts. 202 with counts and,
        for each refused message, why (serving.events)."""
        started = time.perf_counter()
        model = self.served.model
        out, scored = ingest(self.lead_store, model, self.alert_policy, request)
        if out.alerts_queued:
            self.delivery.wake()
        self._log_scores(scored)
        logger.info(
            "events received=%d accepted=%d duplicates=%d refused=%d rescored=%d alerts=%d in %.1f ms",
            out.received, out.accepted, out.duplicates, out.refused, out.leads_rescored, out.alerts_queued,
            1000 * (time.perf_counter() - started),
        )  # fmt: skip
        return out

    @api.get(
        "/leads/{lead_id}/score", tags=TAGS, dependencies=KEY, response_model=ScoreOut,
        responses={**refusals(400, 401, 403), **LEAD_RESPONSES},
    )  # fmt: skip
    def lead_score(self, lead_id: str, query: Annotated[LeadScoreQuery, Query()]) -> ScoreOut | Response:
        """Score a lead of the lead store from its stored history, as of now (or `as_of`), through the one
        feature definition; 404 naming it when the store has no such lead."""
        return self._score_stored(self.served.model, lead_id, query, "LeadScoreQuery", ("path", "lead_id"))

    @api.get(
        "/accounts/{account_id}", tags=TAGS, dependencies=KEY, response_model=AccountScoreOut,
        responses={**refusals(400, 401, 403), **ACCOUNT_RESPONSES},
    )  # fmt: skip
    def account_score(self, account_id: str, query: Annotated[AccountQuery, Query()]) -> AccountScoreOut | Response:
        """Score an account from its contacts in the lead store (serving.accounts): probability, tier, top reasons
        and the contacts ranked by contribution; 404 when the store has no contact of it or the bundle no account model."""
        served = self.served
        account_model = self.account_models.of(served.bundle_dir, served.model)
        if account_model is None:
            return not_found("no_account_model", f"the bundle of model {served.model.meta.model_version} has no account model: "
                             "train on data whose leads carry an account_id", [])  # fmt: skip
        try:
            out = score_stored_account(self.lead_store, served.model, account_model, account_id, query)
        except LeadRejected as exc:
            raise rejection("AccountQuery", [((*exc.field.split("."),), str(exc))]) from None
        if out is None:
            return not_found("unknown_account", f"no contact of account {account_id!r} in the lead store (send a group call with POST /events)",
                             ["path", "account_id"])  # fmt: skip
        return out

    def _score_stored(
        self, model: ScoringModel, lead_id: str, query: LeadScoreQuery, title: str, where: Location
    ) -> ScoreOut | Response:
        started = time.perf_counter()
        try:
            (out, features), alerted = score_stored(
                self.lead_store, model, lead_id, query.as_of, self.alert_policy,
                explain=query.explain, top_k=query.top_k, language=query.language,
            )  # fmt: skip
        except UnknownLead as exc:
            return lead_not_found(exc, list(where))
        except LeadRejected as exc:
            raise rejection(title, [((*exc.field.split("."),), str(exc))]) from None
        if alerted:
            self.delivery.wake()
        self._log_scores([(out, features)])
        logger.info(
            "stored lead=%s tier=%s in %.1f ms", self.lead_ref(lead_id), out.tier, 1000 * (time.perf_counter() - started)
        )
        return out

    @api.get("/model", tags=TAGS, dependencies=KEY, responses=refusals(401, 403))
    def get_model(self) -> ModelCard:
        """The model being served: version, training date, horizon, test metrics, features, tiers."""
        return self.model_card()

    @api.get(
        "/report", tags=TAGS, dependencies=KEY, response_class=Response,  # the media types are the responses'
        responses={200: {"description": "The report", "content": {"text/html": {"schema": {"type": "string"}}}},
                   **refusals(401, 403, 404)},
    )  # fmt: skip
    def get_report(self) -> Response:
        """The leadership report of the served model (one offline HTML page)."""
        return bundle_file_response(self, REPORT_FILE, "text/html; charset=utf-8")

    @api.get(
        "/importance", tags=TAGS, dependencies=KEY, response_model=dict[str, Any], responses=refusals(401, 403, 404)
    )
    def get_importance(self) -> Response:
        """The served model's global drivers (written by training into the bundle)."""
        return bundle_file_response(self, IMPORTANCE_FILE, "application/json")

    @api.post(
        "/admin/reload", tags=TAGS, dependencies=KEY, response_model=ReloadOut,
        responses=refusals(400, 401, 403, 409, 413, 415, 422),
    )  # fmt: skip
    async def admin_reload(
        self, wanted: Annotated[ReloadRequest, Body()]
    ) -> Response | ReloadOut:
        """Load a model bundle off the event loop, check it (first in a child process; format, meaning,
        a smoke prediction against training's, feature spec compatible with the served model) and
        swap it in; requests in flight finish on the old model.
        `{}`: load again from where the model came from (the registry's champion, or
        LEADSCORE_BUNDLE). The body is required, so that a reload is always asked for in words.
        Role admin.
        """
        try:
            return await anyio.to_thread.run_sync(self.reload, wanted.bundle, wanted.version)
        except ReloadConflict as exc:
            return refusal(409, "Conflict", "reload_conflict", [], str(exc))
        except BundleRejected as exc:
            return refusal(422, "Unprocessable Content", "bundle_rejected", ["bundle"], str(exc))

    @api.post(HUBSPOT_PATH, tags=CRM_TAGS, response_model=HubSpotActionOut, responses=HUBSPOT_RESPONSES)
    async def hubspot_action(self, request: Request) -> Response:
        """A HubSpot workflow custom action: no API key, signed by the app's secret (X-HubSpot-Signature-v3).
        Scores the enrolled record now from `object.properties` (mapped by LEADSCORE_CRM_CONFIG) and answers
        `outputFields` (probability, score, tier, top_reason, model_version).
        """
        return await self.crm.hubspot_action(request, self.served.model)

    @api.post(SALESFORCE_PATH, tags=CRM_TAGS, response_class=Response, responses=SALESFORCE_RESPONSES)
    async def salesforce_outbound(self, request: Request) -> Response:
        """A Salesforce outbound message (SOAP, up to 100 Lead notifications): no API key, checked by its
        OrganizationId and the URL's `?token=`. Scores each Lead now and answers `<Ack>true</Ack>`; a
        notification Id already scored is acknowledged, not scored again.
        """
        return await self.crm.salesforce_outbound(request, self.served.model)

    def model_card(self) -> ModelCard:
        """What `GET /model` answers."""
        meta = self.served.model.meta
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

    def reload(self, bundle: str | None = None, version: str | None = None) -> ReloadOut:
        """Load a bundle, check it, and swap it in; the old model serves until the swap.

        Args:
            bundle: A bundle folder on this machine.
            version: A version of the registered model (only when serving from the registry).
            Neither: load again from where the model came from (`bundle_location`).

        Raises:
            ReloadConflict: Another reload is running, or a registry version is asked of a
                service that serves `LEADSCORE_BUNDLE`.
            BundleRejected: The bundle fails its check in a child process (or crashes it), cannot
                be loaded, or fails `check_bundle`.
        """
        if not self._reload_lock.acquire(blocking=False):
            raise ReloadConflict("another reload is running: try again when it has finished")
        try:
            started = time.perf_counter()
            path, origin, registry_version = self._locate(bundle, version)
            previous = self.served
            with _gil_handed_over_often():
                try:
                    candidate = load_checked_bundle(path, origin)
                except BundleLoadError as exc:
                    raise BundleRejected(str(exc)) from exc
                notes = check_bundle(candidate, previous.model)
            for note in notes:
                logger.warning("bundle check: %s", note)
            self.served = Served(candidate, path, origin, registry_version)  # the swap: one reference
            seconds = round(time.perf_counter() - started, 3)
            logger.info(
                "swapped model %s for %s from %s (%s) in %.2f s",
                previous.model.meta.model_version, candidate.meta.model_version, path, origin, seconds,
            )  # fmt: skip
            out = ReloadOut(
                model_version=candidate.meta.model_version,
                previous_model_version=previous.model.meta.model_version,
                source=origin,
                seconds=seconds,
            )
            del previous, candidate
            _freeze_long_lived()  # the new model joins the long-lived objects, the old one can go
            return out
        finally:
            self._reload_lock.release()

    def _locate(self, bundle: str | None, version: str | None) -> tuple[Path, str, str | None]:
        if bundle is not None:
            return Path(bundle), "POST /admin/reload bundle", None
        if version is None:
            try:
                return bundle_location()
            except BundleLoadError as exc:
                raise BundleRejected(str(exc)) from exc
        if not self.from_registry:
            raise ReloadConflict(
                f"this service serves a bundle folder (${BUNDLE_ENV}), not the registry: reload a folder with "
                '{"bundle": PATH}, or unset ' + BUNDLE_ENV + " to serve the registry's champion"
            )
        from model.registry import RegistryError, download_version, registry_from_env

        registry = registry_from_env()
        try:
            path = download_version(registry, version)
        except RegistryError as exc:
            raise BundleRejected(str(exc)) from exc
        return path, f"registry {registry.model_name} version {version}", version

    def _follow_champion(self) -> None:
        """Poll the registry's `champion` alias; reload when it moves to another version."""
        from model.registry import RegistryError, champion_version, registry_from_env

        registry = registry_from_env()
        seen = self.served.registry_version
        while not self._stop.wait(self.poll_seconds):
            try:
                current = champion_version(registry, must_exist=True)
            except RegistryError as exc:  # named and retried: the poll recovers when the store is back
                logger.warning("champion poll: %s", exc)
                continue
            if current is None or current == seen:
                continue
            seen = current  # tried once per move: a refused version is not retried until the alias moves again
            logger.info("champion of %s moved to version %s: reloading", registry.model_name, current)
            try:
                self.reload(version=current)
            except (BundleRejected, ReloadConflict) as exc:
                logger.warning("champion version %s not swapped in, still serving %s: %s",
                               current, self.served.model.meta.model_version, exc)  # fmt: skip

    @bentoml.on_shutdown
    def stop_following(self) -> None:
        """Stop the champion poll and the alert delivery with the server (undelivered alerts stay in the outbox)."""
        self._stop.set()
        self.delivery.stop()

    def _log_scores(self, scored: Sequence[tuple[ScoreOut, dict[str, object]]]) -> None:
        """Record scores in the score log, if any; a failure to record is logged, not the client's problem."""
        if self.score_log is None:
            return
        now = datetime.now(UTC)
        records = [
            ScoreRecord(
                logged_at=now,
                lead=self.lead_ref(out.lead_id),
                model_version=out.model_version,
                as_of=out.as_of,
                probability=out.probability,
                score=out.score,
                tier=out.tier,
                features=features,
            )
            for out, features in scored
        ]
        try:
            self.score_log.write(records)
        except ScoreLogError as exc:
            logger.error("%s (%d scores not recorded)", exc, len(records))

    def _score_all(
        self,
        model: ScoringModel,
        leads: Sequence[tuple[Location, LeadIn]],
        as_of: datetime | None,
        *,
        explain: bool,
        top_k: int,
        language: str,
        title: str,
        vectorised: bool = False,
    ) -> list[tuple[ScoreOut, dict[str, object]]]:
        """Score leads in order, or reject them all, naming every lead that cannot be scored.

        Args:
            model: The model of this request.
            leads: (where the lead is in the request body, lead) pairs.
            as_of: Passed to `score_lead_with_features`.
            explain, top_k, language: Passed to `score_lead_with_features`.
            title: The request model's name, for the error.
            vectorised: Read every lead first, then compute features and predict for all at once
                (`model.scoring.score_read_leads`, the same answers): batches.

        Returns:
            (score, features the model saw) per lead.

        Raises:
            ValidationError: Some lead cannot be scored (BentoML answers 400).
        """
        results: list[tuple[ScoreOut, dict[str, object]]] = []
        reads: list[LeadRead] = []
        problems: list[tuple[Location, str]] = []
        for where, lead in leads:
            try:
                if vectorised:
                    reads.append(read_lead(model, lead, as_of))
                else:
                    results.append(
                        score_lead_with_features(model, lead, as_of, with_reasons=explain, top_k=top_k, language=language)
                    )
            except LeadRejected as exc:  # the client's mistake, named; any other error is ours: a 500
                problems.append(((*where, *exc.field.split(".")), str(exc)))
        if problems:
            raise rejection(title, problems)
        if vectorised:
            return score_read_leads(model, reads, with_reasons=explain, top_k=top_k, language=language)
        return results


SCORE_OUT_JSON = ScoreOut.__pydantic_serializer__


def current_service() -> LeadScoring | None:
    """The running service instance, or None before start-up (for the middleware)."""
    try:
        return bentoml.get_current_service()
    except BentoMLException:
        return None


@api.post("/score", tags=TAGS, dependencies=KEY, response_model=ScoreOut, responses={**refusals(400, 401, 403, 413, 415), **LEAD_RESPONSES})
async def score(request: ScoreRequest) -> ScoreOut | Response:
    """Score one lead: probability, 0-100 score, tier, MQL, the main reasons up and down, the point grid's verdict.
    `lead_id` alone: a lead of the lead store, scored from its stored history (404 when unknown)."""
    service = current_service()
    if service is None:  # before start-up `ApiKeyAuth` has already answered 503
        return refusal(503, "Service Unavailable", "starting", [], "the service is starting: try again")
    return await _score_response(service, request)


async def _score_response(service: LeadScoring, request: ScoreRequest) -> Response:
    out = await service.score(request)
    if isinstance(out, ScoreOut):  # written here: FastAPI would check it against ScoreOut again, then dump it twice
        return Response(SCORE_OUT_JSON.to_json(out), media_type="application/json")
    return out


async def answer_score(body: bytes) -> Response | None:
    """`POST /score` from its body, as the route answers it, for `serving.middleware.DirectRoute`.

    The body is read as `JsonBodyRoute` reads it (`validated_body`), and a lead the model refuses answers as the
    app's handler answers it (`validation_response`). None before start-up: the app answers.
    """
    service = current_service()
    if service is None:
        return None
    try:
        request = validated_body(ScoreRequest, body)
        return await _score_response(service, request)
    except ValidationError as exc:
        return validation_response(exc)


def current_api_keys() -> ApiKeys | None:
    service = current_service()
    return service.api_keys if service is not None else None


def current_max_body_bytes() -> int:
    service = current_service()
    return service.max_body_bytes if service is not None else DEFAULT_MAX_BODY_BYTES


# `@bentoml.service` makes LeadScoring a `bentoml.Service` (with `openapi_spec` and
# `add_asgi_middleware`), but mypy does not apply class decorators and sees the plain class:
# hence the attr-defined ignores below.

# FastAPI's document of the routes above, with BentoML's health endpoints (`serving.api`).
api.openapi = lambda: service_document(api, LeadScoring.openapi_spec.asdict())  # type: ignore[method-assign, attr-defined]

# BentoML's traffic metrics, outside every middleware here, label requests by route, not raw path.
label_metrics_by_route()
# BentoML's request timeout lets go of each request once it is answered (`serving.timeouts`).
cancel_timers_when_answered()
# BentoML's tracing opens one span per request, not one per message sent or received (`serving.tracing`).
trace_requests_only()

# Outermost first: a request without a key is refused before its body is read; a path no route
# serves is answered in the error shape of every other refusal.
LeadScoring.add_asgi_middleware(JsonNotFound)  # type: ignore[attr-defined]
LeadScoring.add_asgi_middleware(ApiKeyAuth, keys=current_api_keys)  # type: ignore[attr-defined]
LeadScoring.add_asgi_middleware(BodySizeLimit, max_bytes=current_max_body_bytes)  # type: ignore[attr-defined]
LeadScoring.add_asgi_middleware(JsonBodiesOnly, other_media_types={SALESFORCE_PATH: XML_MEDIA_TYPES})  # type: ignore[attr-defined]
# Innermost: `POST /score`, the CRMs' call on every lead, answered without the router's and FastAPI's stack.
LeadScoring.add_asgi_middleware(DirectRoute, method="POST", path="/score", answer=answer_score)  # type: ignore[attr-defined]
