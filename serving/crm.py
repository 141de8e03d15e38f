"""The CRM-native endpoints: `POST /crm/hubspot/action` and `POST /crm/salesforce/outbound`.

CRMs cannot send the service's API key, so `serving.auth` lets these two paths through the key
check and each proves its caller here, before anything is scored:

- HubSpot: the request's `X-HubSpot-Signature-v3`, made with the app's client secret
  (`LEADSCORE_HUBSPOT_APP_SECRET`) less than 5 minutes ago (`serving.crm_formats.verify_hubspot_v3`),
  over the URL HubSpot called (`LEADSCORE_PUBLIC_URL`, else the request's scheme and Host).
- Salesforce: outbound messages carry no signature. What Salesforce's security guide asks is
  checked: the message's `OrganizationId` is one of `LEADSCORE_SALESFORCE_ORG_IDS`; and, since an
  org id is not secret, a token the endpoint URL carries (`?token=...`, `LEADSCORE_SALESFORCE_TOKEN`)
  when one is configured. The token is in the query, not the path: `/metrics` labels requests by
  path, and it is open. TLS, and Salesforce's IP ranges at the proxy, are the operator's.

An endpoint without its secret configured refuses every request (403), never takes one unproven.

Each record is read through the field maps of `LEADSCORE_CRM_CONFIG` (`serving.crm_formats.CrmConfig`),
kept in the lead store (merged with what events told it), scored now from that history (its
score recorded there, and its alert queued when it is one: `model.leadstore`), and recorded in
the score log. Answers:

- HubSpot: 200 `{"outputFields": {probability, score, tier, top_reason, model_version}}`; a
  client mistake (a body that is not the action's JSON, a property unknown to the map, a value
  the model cannot read) is a 400 whose `detail[].loc` names the field in HubSpot's body,
  e.g. `["object", "properties", "numemployees"]`: HubSpot never retries a 4xx.
- Salesforce: 200 `<Ack>true</Ack>` when every notification is scored or was already (a
  notification Id seen before is acknowledged, not scored twice: Salesforce sends a message
  again until acknowledged, and may send it twice). A message that cannot be read is a 400 SOAP
  fault naming the element; one whose notifications are read but some cannot be scored has the
  others scored and a 400 fault naming the rest, so that Salesforce's delivery status shows why,
  and its retry scores only those.

Notification Ids are remembered among the lead store's processed messages (`salesforce:<Id>`),
claimed in the transaction that stores and scores the lead: a restart forgets none.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import anyio
import yaml
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from model.bundle import ScoringModel
from model.leadstore import AlertPolicy, LeadStore, stored_lead_in
from model.scoring import LeadIn, LeadRejected, ScoreOut, creation_time, score_lead_with_features
from model.settings import Settings
from serving.api import error_response, validation_response
from serving.auth import HUBSPOT_PATH, SALESFORCE_PATH
from serving.crm_formats import (
    HUBSPOT_SIGNATURE_HEADER,
    CrmConfig,
    CrmLead,
    CrmRejected,
    HubSpotActionRequest,
    Location,
    hubspot_lead,
    hubspot_output,
    hubspot_uri,
    parse_outbound_message,
    salesforce_ack,
    salesforce_lead,
    soap_fault,
    verify_hubspot_v3,
)
from serving.middleware import refusal
from serving.schemas import ErrorBody

SOAP_MEDIA_TYPE = "text/xml; charset=utf-8"
DEDUP_KIND = "salesforce"

logger = logging.getLogger(__name__)

_SOAP_BODY = {"text/xml": {"schema": {"type": "string"}}}
HUBSPOT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Not the action's JSON, a property unknown to the map, or a value the model "
          "cannot read: `detail[].loc` names it in HubSpot's body (HubSpot does not retry a 4xx)"},
    401: {"model": ErrorBody, "description": "No valid X-HubSpot-Signature-v3, or its timestamp is over 5 minutes old"},
    403: {"model": ErrorBody, "description": "No HubSpot app secret is configured (LEADSCORE_HUBSPOT_APP_SECRET)"},
    413: {"model": ErrorBody, "description": "Request body over the size limit (LEADSCORE_MAX_BODY_BYTES)"},
    415: {"model": ErrorBody, "description": "Body not declared as JSON"},
}  # fmt: skip
SALESFORCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "`<notificationsResponse><Ack>true</Ack>`: every notification scored, or scored before", "content": _SOAP_BODY},
    400: {"description": "A SOAP fault naming what cannot be read or scored (the rest is scored; Salesforce retries)", "content": _SOAP_BODY},
    401: {"description": "A SOAP fault: the URL's token or the message's OrganizationId is not the configured one", "content": _SOAP_BODY},
    403: {"description": "A SOAP fault: no Salesforce org id is configured (LEADSCORE_SALESFORCE_ORG_IDS)", "content": _SOAP_BODY},
    413: {"model": ErrorBody, "description": "Request body over the size limit (LEADSCORE_MAX_BODY_BYTES)"},
    415: {"model": ErrorBody, "description": "Body declared as neither XML nor JSON"},
}  # fmt: skip

Scored = tuple[ScoreOut, dict[str, object]]


class CrmConfigError(ValueError):
    """The CRM config file cannot be used; the message names the file and the key."""


def read_crm_config(path: Path | None) -> CrmConfig:
    """The field maps from a YAML file, or the defaults without one.

    Raises:
        CrmConfigError: The file cannot be read, is not YAML, or has unknown or bad keys.
    """
    if path is None:
        return CrmConfig()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CrmConfigError(f"{path} (LEADSCORE_CRM_CONFIG): {exc}") from exc
    try:
        return CrmConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        raise CrmConfigError(f"{path} (LEADSCORE_CRM_CONFIG): {problems}") from None


class CrmScoring(Protocol):
    """How a CRM's lead is kept and scored: the service's lead store behind one call."""

    def __call__(self, model: ScoringModel, lead: LeadIn, dedup_id: str | None) -> Scored | None:
        """Store and score a lead (None: `dedup_id` was seen before, nothing done).

        Raises:
            LeadRejected: The lead cannot be scored (nothing is kept).
        """
        ...


def score_with_store(store: LeadStore, policy: AlertPolicy) -> CrmScoring:
    """Keep a CRM's lead in the lead store and score it from its stored history, in one transaction.

    The record's attributes and creation time are merged into what the store holds (events
    included), keyed by feature name where the model's lead schema knows the CRM's name; the
    lead is scored from the merged history as of now, and the score recorded (queueing its alert
    when it is one). A `dedup_id` is claimed among the store's processed messages in the same
    transaction: a lead that cannot be scored leaves nothing behind, not even its claim, so that
    the CRM's retry is scored.
    """

    def score(model: ScoringModel, lead: LeadIn, dedup_id: str | None) -> Scored | None:
        created_at = creation_time(model, lead)
        attributes = {_feature_name(model, key): value for key, value in lead.attributes.items()}
        with store.session() as session:
            if dedup_id is not None and not session.claim_messages([(dedup_id, lead.lead_id, DEDUP_KIND)]):
                return None
            session.upsert_lead(lead.lead_id, attributes, created_at=created_at)
            scored = score_lead_with_features(model, stored_lead_in(*session.history(lead.lead_id)), None, with_reasons=True, top_k=1)
            session.record_score(lead.lead_id, scored[0], policy)
            return scored

    return score


def _feature_name(model: ScoringModel, key: str) -> str:
    # Stored under the feature name, so that an event naming the attribute the other way updates the same one.
    try:
        return model.schema.column(key).name
    except KeyError:
        return key


class CrmEndpoints:
    """The CRM endpoints' settings, field maps and memory of notifications, and their answers.

    Args:
        settings: The service's settings (secrets, org ids, public URL).
        config: The field maps.
        scoring: Stores and scores one lead (`score_with_store`).
        record: Records scores in the score log (`LeadScoring._log_scores`).
        lead_ref: How the log names a lead (its keyed hash).
    """

    def __init__(
        self,
        settings: Settings,
        config: CrmConfig,
        *,
        scoring: CrmScoring,
        record: Callable[[Sequence[Scored]], None],
        lead_ref: Callable[[str], str],
    ) -> None:
        self.config = config
        self.hubspot_secret = settings.hubspot_app_secret
        self.public_url = settings.public_url
        ids = settings.salesforce_org_ids
        self.salesforce_org_ids = tuple(i.strip() for i in ids.split(",")) if ids else ()
        self.salesforce_token = settings.salesforce_token
        self.scoring = scoring
        self.record = record
        self.lead_ref = lead_ref

    def describe(self) -> str:
        """What the start-up log says of the CRM endpoints (never a secret)."""
        hubspot = "on" if self.hubspot_secret else "off (no LEADSCORE_HUBSPOT_APP_SECRET)"
        if not self.salesforce_org_ids:
            salesforce = "off (no LEADSCORE_SALESFORCE_ORG_IDS)"
        else:
            token = "and URL token" if self.salesforce_token else "only: set LEADSCORE_SALESFORCE_TOKEN, an org id is not secret"
            salesforce = f"on for {len(self.salesforce_org_ids)} org(s), checked by org id {token}"
        return f"{HUBSPOT_PATH} {hubspot}; {SALESFORCE_PATH} {salesforce}"

    # -- HubSpot --------------------------------------------------------------------------
    async def hubspot_action(self, request: Request, model: ScoringModel) -> Response:
        """Verify, read, store and score a HubSpot custom action's record; answer its output fields."""
        started = time.perf_counter()
        body = await request.body()
        if self.hubspot_secret is None:
            return self._hubspot_refused(403, "Forbidden", "not_configured", "this service takes no HubSpot requests: set LEADSCORE_HUBSPOT_APP_SECRET")
        base = self.public_url or f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
        uri = hubspot_uri(base, request.scope.get("raw_path", request.url.path.encode()).decode("latin-1"),
                          request.scope.get("query_string", b"").decode("latin-1"))  # fmt: skip
        refused = verify_hubspot_v3(
            self.hubspot_secret.get_secret_value(), request.method, uri, body, request.headers, datetime.now(UTC)
        )
        if refused is not None:
            return self._hubspot_refused(401, "Unauthorized", refused.kind, refused.reason)
        try:
            action = HubSpotActionRequest.model_validate_json(body)
            crm_lead = hubspot_lead(action, self.config.hubspot)
        except ValidationError as exc:
            logger.info("crm hubspot: refused a body: %d validation error(s)", exc.error_count())
            return validation_response(exc)
        except CrmRejected as exc:
            return self._rejected(HubSpotActionRequest.__name__, exc.problems)
        try:
            scored = await anyio.to_thread.run_sync(self.scoring, model, crm_lead.lead, None)
        except LeadRejected as exc:
            return self._rejected(HubSpotActionRequest.__name__, [(crm_lead.location(exc.field), exc.reason)])
        assert scored is not None  # no dedup id: always scored
        self.record([scored])
        out = scored[0]
        up = (out.reasons or {}).get("up") or []
        logger.info(
            "crm hubspot portal=%d lead=%s tier=%s warnings=%d in %.1f ms",
            action.origin.portalId, self.lead_ref(out.lead_id), out.tier, len(out.warnings), 1000 * (time.perf_counter() - started),
        )  # fmt: skip
        answer = hubspot_output(out.probability, out.score, out.tier, up[0].label if up else None, out.model_version)
        return JSONResponse(answer.model_dump(mode="json"))

    @staticmethod
    def _hubspot_refused(status: int, title: str, kind: str, reason: str) -> Response:
        logger.info("crm hubspot: refused (%s)", kind)
        return refusal(status, title, kind, ["header", HUBSPOT_SIGNATURE_HEADER], reason)

    @staticmethod
    def _rejected(title: str, problems: Sequence[tuple[Location, str]]) -> Response:
        logger.info("crm hubspot: refused a record: %d problem(s)", len(problems))
        detail = [{"type": "value_error", "loc": list(loc), "msg": msg} for loc, msg in problems]
        return error_response(400, f"{len(detail)} validation error for {title}", detail)

    # -- Salesforce -----------------------------------------------------------------------
    async def salesforce_outbound(self, request: Request, model: ScoringModel) -> Response:
        """Check, read, store and score a Salesforce outbound message; acknowledge it."""
        started = time.perf_counter()
        if not self.salesforce_org_ids:
            return _soap(403, [((), "this service takes no Salesforce messages: set LEADSCORE_SALESFORCE_ORG_IDS")], "not configured")
        if self.salesforce_token is not None:
            presented = request.query_params.get("token", "")
            if not hmac.compare_digest(presented.encode(), self.salesforce_token.get_secret_value().encode()):
                return _soap(401, [(("token",), "the endpoint URL's token is missing or wrong")], "bad token")
        body = await request.body()
        try:
            message = parse_outbound_message(body)
        except CrmRejected as exc:
            return _soap(400, exc.problems, "unreadable message")
        if not any(_same_org(message.organization_id, allowed) for allowed in self.salesforce_org_ids):
            return _soap(401, [(("OrganizationId",), "not an organization this service takes (LEADSCORE_SALESFORCE_ORG_IDS)")], "other org")
        leads: list[tuple[str, CrmLead]] = []
        problems: list[tuple[Location, str]] = []
        for notification in message.notifications:
            try:
                leads.append((notification.id, salesforce_lead(notification, self.config.salesforce)))
            except CrmRejected as exc:
                problems.extend(exc.problems)
        scored, duplicates, refused = await anyio.to_thread.run_sync(self._score_salesforce, model, leads)
        problems.extend(refused)
        if scored:
            self.record(scored)
        logger.info(
            "crm salesforce org=%s notifications=%d scored=%d (%s) duplicates=%d refused=%d in %.1f ms",
            message.organization_id, len(message.notifications), len(scored), " ".join(self.lead_ref(o.lead_id) for o, _ in scored),
            duplicates, len(message.notifications) - len(scored) - duplicates, 1000 * (time.perf_counter() - started),
        )  # fmt: skip
        if problems:
            return _soap(400, problems, "notifications refused")
        return Response(salesforce_ack(), media_type=SOAP_MEDIA_TYPE)

    def _score_salesforce(
        self, model: ScoringModel, leads: Sequence[tuple[str, CrmLead]]
    ) -> tuple[list[Scored], int, list[tuple[Location, str]]]:
        scored: list[Scored] = []
        refused: list[tuple[Location, str]] = []
        duplicates = 0
        for notification_id, crm_lead in leads:
            try:
                result = self.scoring(model, crm_lead.lead, f"{DEDUP_KIND}:{notification_id}")
            except LeadRejected as exc:
                refused.append((crm_lead.location(exc.field), exc.reason))
                continue
            if result is None:
                duplicates += 1
            else:
                scored.append(result)
        return scored, duplicates, refused


def _same_org(sent: str, allowed: str) -> bool:
    # The 18-character id is the 15-character one and a case checksum: a 15-character one configured matches both.
    return hmac.compare_digest(sent[: len(allowed)].encode(), allowed.encode()) and len(sent) in (len(allowed), 18)


def _soap(status: int, problems: Sequence[tuple[Location, str]], why: str) -> Response:
    logger.info("crm salesforce: answered %d (%s, %d problem(s))", status, why, len(problems))
    return Response(soap_fault(list(problems)), status_code=status, media_type=SOAP_MEDIA_TYPE)
