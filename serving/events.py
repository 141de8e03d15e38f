"""`POST /events` (Segment-spec batches into the lead store) and scoring a stored lead.

A batch is `{"batch": [message, ...]}` as Segment's HTTP tracking API sends it. Each message is
read on its own, so one bad message never refuses its neighbours:

- `identify`: `traits` become the lead's attributes (keys as the model's features or as the
  export's columns; read by the served model's lead schema to refuse what it cannot read);
  the reserved trait `createdAt` (or `created_at`) declares when the lead was created;
- `track`: `event` is the interaction type as the CRM names it (the model's `type_map` maps it
  when the lead is scored, as in training), `timestamp` when it happened, `properties` its
  numbers (`properties.channel` is its channel);
- `group`: `groupId` is the lead's account.

The lead is the message's `userId`; a message without one (an anonymous visitor) is refused.
Every message is applied once: its `messageId` is recorded with the change, in the same
transaction, and a message seen before is counted as a duplicate. A message that cannot be
taken is refused with its index, id and reason; what is taken only in part (a nested trait,
an event type the model counts as "other") gets a note. The answer is 202 with the counts.

The leads a batch touched are scored again from their stored history, as of now, in the
transaction that stored the batch, and their alerts are queued there (`model.leadstore`):
a batch answered 202 has its alerts in the outbox, whatever happens to the process after.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import JSONResponse

from features.engine import counted_as
from features.schema import LeadSchema
from model.bundle import ScoringModel
from model.leadstore import (
    CHANNEL,
    MAX_ID_CHARS,
    MAX_TYPE_CHARS,
    AlertPolicy,
    Interaction,
    LeadStore,
    LeadUpdate,
    StoreSession,
    UnknownLead,
    alert_kinds,
    stored_lead_in,
)
from model.scoring import (
    IN_RANGE_SCHEMA,
    LeadRead,
    LeadRejected,
    ScoreOut,
    Timestamp,
    not_in_the_future,
    read_lead,
    score_lead_with_features,
    score_read_leads,
)
from serving.schemas import MAX_TOP_K, ErrorBody, Language

MAX_EVENT_MESSAGES = 2_000
MESSAGE_TYPES = ("identify", "track", "group")
CREATED_AT_TRAITS = ("createdAt", "created_at")
Scalar = str | int | float | bool | None
Scored = tuple[ScoreOut, dict[str, object]]


class EventBatch(BaseModel):
    """Body of `POST /events`: a Segment batch. Other top-level keys (`context`, `sentAt`) are ignored."""

    model_config = ConfigDict(extra="allow", title="EventBatch", hide_input_in_errors=True)

    batch: Annotated[list[Any], Field(min_length=1, max_length=MAX_EVENT_MESSAGES)] = Field(
        description="Segment messages (`identify`, `track`, `group`); each is taken or refused on its own."
    )


class SegmentMessage(BaseModel):
    """One Segment message, the fields this service reads (others, such as `context`, are ignored)."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    type: str
    messageId: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
    userId: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)] | None = None
    anonymousId: Any = None
    timestamp: Timestamp | None = None
    originalTimestamp: Timestamp | None = None
    traits: dict[str, Any] | None = None
    event: Annotated[str, Field(max_length=MAX_TYPE_CHARS)] | None = None
    properties: dict[str, Any] | None = None
    groupId: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)] | None = None


class LeadScoreQuery(BaseModel):
    """Query of `GET /leads/{lead_id}/score` (and the options of `POST /score` with a `lead_id`)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    as_of: Timestamp | None = Field(
        default=None,
        description="Score the stored history as it was at this time (ISO 8601); now when omitted. Only a score as of "
        "now is recorded as the lead's last score (and may be an alert).",
        json_schema_extra=IN_RANGE_SCHEMA,
    )
    explain: bool = Field(default=True, description="Give the reasons behind the score.")
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = Field(default=3, description="How many reasons each way.")
    language: Language = Field(default="en", description="Language of the reason labels.")

    @field_validator("as_of")
    @classmethod
    def _not_in_the_future(cls, value: datetime | None) -> datetime | None:
        return None if value is None else not_in_the_future(value)


LEAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No lead with this lead_id in the lead store (send it with POST /events first)"}
}


def lead_not_found(exc: UnknownLead, loc: list[str | int]) -> JSONResponse:
    """404 naming the lead the store does not have."""
    return JSONResponse(
        {"error": "Not Found", "detail": [{"type": "unknown_lead", "loc": loc, "msg": str(exc)}]}, status_code=404
    )


class EventRefusal(BaseModel):
    index: int = Field(description="Position of the message in `batch`.")
    messageId: str | None
    reason: str


class EventNote(BaseModel):
    index: int
    messageId: str | None
    note: str


class EventsOut(BaseModel):
    """Answer of `POST /events` (202): what was done with each message."""

    received: int
    accepted: int = Field(description="Messages applied to the lead store.")
    duplicates: int = Field(description="Messages already applied (same messageId), taken again as no-ops.")
    refused: int
    refusals: list[EventRefusal] = Field(description="Each refused message, with why.")
    notes: list[EventNote] = Field(description="Messages taken in part, or leads that could not be scored again.")
    leads_rescored: int
    alerts_queued: int
    model_version: str


@dataclass
class Change:
    """One message, read: what it changes in the lead store."""

    index: int
    message_id: str
    lead_id: str
    kind: Literal["identify", "track", "group"]
    at: datetime
    attributes: dict[str, Scalar] = field(default_factory=dict)
    created_at: datetime | None = None
    event_type: str | None = None
    properties: dict[str, Scalar] = field(default_factory=dict)
    account_id: str | None = None


@dataclass
class ReadBatch:
    changes: list[Change]
    refusals: list[EventRefusal]
    notes: list[EventNote]
    duplicates: int  # within the batch


class Refused(ValueError):
    """A message that cannot be taken; the reason names the field."""


def _instant(schema: LeadSchema, value: datetime, name: str, *, created: bool) -> datetime:
    read, problem = schema.instant(value, schema.created_at) if created else schema.instant(value, zone=schema.interaction_timezone)
    if read is None:
        raise Refused(f"{name}: {problem or 'cannot be read'}")
    try:
        return not_in_the_future(read)
    except ValueError as error:
        raise Refused(f"{name}: {error}") from None


def _scalars(values: dict[str, Any], name: str, notes: list[str]) -> dict[str, Scalar]:
    kept: dict[str, Scalar] = {}
    left_out = []
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise Refused(f"{name}.{key}: must be a finite number")
        if value is None or isinstance(value, (str, int, float, bool)):
            kept[key] = value
        else:
            left_out.append(key)
    if left_out:
        notes.append(f"{name} not stored (not a text, number, boolean or null): {sorted(left_out)}")
    return kept


def read_message(schema: LeadSchema, model: ScoringModel, index: int, raw: object) -> tuple[Change, list[str]]:
    """One message as a change of the lead store, and notes on what was taken only in part.

    Raises:
        Refused: The message cannot be taken, saying why.
    """
    if not isinstance(raw, dict):
        raise Refused("not a JSON object")
    try:
        message = SegmentMessage.model_validate(raw)
    except ValidationError as exc:
        raise Refused(
            "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors(include_url=False))
        ) from None
    if message.type not in MESSAGE_TYPES:
        raise Refused(f"type: {message.type!r} is not taken here; send {', '.join(MESSAGE_TYPES)}")
    if message.userId is None:
        raise Refused("userId: missing; a message with only an anonymousId cannot be attached to a lead")
    notes: list[str] = []
    stamp = message.timestamp or message.originalTimestamp
    kind: Literal["identify", "track", "group"] = message.type  # type: ignore[assignment]
    if stamp is None:
        if kind == "track":
            raise Refused("timestamp: missing; an interaction needs the time it happened")
        at = datetime.now(UTC)
    else:
        at = _instant(schema, stamp, "timestamp", created=False)
    change = Change(index=index, message_id=message.messageId, lead_id=message.userId, kind=kind, at=at)
    if kind == "identify":
        traits = _scalars(dict(message.traits or {}), "traits", notes)
        for key in CREATED_AT_TRAITS:
            if key in traits:
                value = traits.pop(key)
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise Refused(f"traits.{key}: must be an ISO 8601 timestamp (text)")
                try:
                    declared = datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    raise Refused(f"traits.{key}: not an ISO 8601 timestamp") from None
                change.created_at = _instant(schema, declared, f"traits.{key}", created=True)
        _, _, problems = schema.normalise_attributes(traits, prefix="traits")
        if problems:
            raise Refused(f"{problems[0].field}: {problems[0].reason}")
        # Keyed by feature name where the schema knows the key: a later identify naming the
        # attribute the other way replaces the value instead of sending it twice.
        change.attributes = {_feature_name(schema, key): value for key, value in traits.items()}
    elif kind == "track":
        if message.event is None or not message.event.strip():
            raise Refused("event: missing or empty; a track message needs the event's name (the interaction type)")
        properties = _scalars(dict(message.properties or {}), "properties", notes)
        channel = properties.get(CHANNEL)
        event_type = schema.interaction_type(message.event, channel)
        numbers = {k: v for k, v in properties.items() if k != CHANNEL}
        _, _, problems = schema.normalise_event_properties(numbers, prefix="properties")
        if problems:
            raise Refused(f"{problems[0].field}: {problems[0].reason}")
        spec = model.spec
        if spec.interactions and event_type is not None and counted_as(event_type, spec) is None:
            notes.append(f"event {message.event!r} is outside model {model.meta.model_version}'s vocabulary: counted as other")
        change.event_type, change.properties = message.event, properties
    else:
        if message.groupId is None:
            raise Refused("groupId: missing; a group message names the lead's account")
        change.account_id = message.groupId
        if message.traits:
            notes.append("traits of a group are not stored: the account's attributes are not lead attributes")
    return change, notes


def _feature_name(schema: LeadSchema, key: str) -> str:
    try:
        return schema.column(key).name
    except KeyError:
        return key


def read_batch(model: ScoringModel, batch: Sequence[object]) -> ReadBatch:
    """Every message of a batch read (`read_message`); a messageId seen earlier in the batch is a duplicate."""
    schema = model.schema
    out = ReadBatch([], [], [], 0)
    seen: set[str] = set()
    for index, raw in enumerate(batch):
        message_id = raw.get("messageId") if isinstance(raw, dict) else None
        shown_id = message_id if isinstance(message_id, str) else None
        try:
            change, notes = read_message(schema, model, index, raw)
        except Refused as refused:
            out.refusals.append(EventRefusal(index=index, messageId=shown_id, reason=str(refused)))
            continue
        if change.message_id in seen:
            out.duplicates += 1
            continue
        seen.add(change.message_id)
        out.changes.append(change)
        out.notes.extend(EventNote(index=index, messageId=shown_id, note=note) for note in notes)
    return out


def apply_changes(session: StoreSession, changes: Sequence[Change]) -> None:
    """Identify and group messages in order (the store keeps the newest observation of each value),
    then the interactions of every lead, each in a few statements for the whole batch."""
    updates: list[LeadUpdate] = []
    tracks: dict[str, list[Interaction]] = {}
    for change in changes:
        if change.kind == "identify":
            updates.append(LeadUpdate(change.lead_id, change.attributes, created_at=change.created_at, observed_at=change.at))
        elif change.kind == "group":
            updates.append(LeadUpdate(change.lead_id, {}, account_id=change.account_id, observed_at=change.at))
        else:
            assert change.event_type is not None
            tracks.setdefault(change.lead_id, []).append((change.message_id, change.event_type, change.at, change.properties))
    session.upsert_leads(updates)
    session.add_interactions_of(tracks)


@dataclass
class Rescored:
    """What `rescore` did: the new scores, the leads that could not be scored, the alerts queued."""

    scored: list[Scored]
    rejected: dict[str, LeadRejected]
    alerts: int


def rescore(
    session: StoreSession, model: ScoringModel, lead_ids: Sequence[str], policy: AlertPolicy, *, language: str = "en"
) -> Rescored:
    """Score stored leads as of now, record their scores and queue their alerts, in `session`.

    The leads are read in one query and scored in one vectorised call (`score_read_leads`,
    the answers of `score_lead_with_features`); only those whose score is an alert are scored
    again with reasons (the alert names the strongest reason up), together.

    Raises:
        UnknownLead: A lead not in the store.
    """
    histories = session.histories(lead_ids)
    reads: list[LeadRead] = []
    rejected: dict[str, LeadRejected] = {}
    for lead_id in lead_ids:
        if lead_id not in histories:
            raise UnknownLead(lead_id)
        try:
            reads.append(read_lead(model, stored_lead_in(*histories[lead_id])))
        except LeadRejected as exc:
            rejected[lead_id] = exc
    scored = score_read_leads(model, reads)
    previous = session.last_scores([r.lead_id for r in reads])
    if policy.targets:
        alerting = [i for i, (out, _) in enumerate(scored) if alert_kinds(previous.get(out.lead_id), out, policy)]
        explained = score_read_leads(model, [reads[i] for i in alerting], with_reasons=True, top_k=1, language=language)
        for i, one in zip(alerting, explained, strict=True):
            scored[i] = one
    alerts = session.record_scores({out.lead_id: out for out, _ in scored}, policy, previous)
    return Rescored(scored, rejected, len(alerts))


def ingest(store: LeadStore, model: ScoringModel, policy: AlertPolicy, request: EventBatch) -> tuple[EventsOut, list[Scored]]:
    """Apply a batch to the store, score the touched leads again and queue their alerts, in one transaction.

    Returns:
        (the answer, the new scores with their features, for the score log).

    Raises:
        LeadStoreError: The store failed; nothing of the batch was applied.
    """
    read = read_batch(model, request.batch)
    notes = list(read.notes)
    with store.session() as session:
        new = session.claim_messages([(c.message_id, c.lead_id, c.kind) for c in read.changes])
        applied = [c for c in read.changes if c.message_id in new]
        apply_changes(session, applied)
        rescored = rescore(session, model, list(dict.fromkeys(c.lead_id for c in applied)), policy)
    for lead_id, exc in rescored.rejected.items():
        index = next(c.index for c in applied if c.lead_id == lead_id)
        notes.append(EventNote(index=index, messageId=None, note=f"lead not scored again: {exc}"))
    out = EventsOut(
        received=len(request.batch),
        accepted=len(applied),
        duplicates=read.duplicates + len(read.changes) - len(applied),
        refused=len(read.refusals),
        refusals=read.refusals,
        notes=notes,
        leads_rescored=len(rescored.scored),
        alerts_queued=rescored.alerts,
        model_version=model.meta.model_version,
    )
    return out, rescored.scored


def score_stored(
    store: LeadStore,
    model: ScoringModel,
    lead_id: str,
    as_of: datetime | None,
    policy: AlertPolicy,
    *,
    explain: bool = True,
    top_k: int = 3,
    language: str = "en",
) -> tuple[Scored, bool]:
    """Score a stored lead from its history: as of now (recorded, and an alert when it is one), or as of a past time (not recorded).

    Returns:
        ((score, features), whether an alert was queued).

    Raises:
        UnknownLead: No such lead (the service answers 404).
        LeadRejected: Its history cannot be scored at `as_of` (e.g. `as_of` before its creation).
    """
    with store.session() as session:
        lead = stored_lead_in(*session.history(lead_id))
        scored = score_lead_with_features(model, lead, as_of, with_reasons=explain, top_k=top_k, language=language)
        if as_of is not None:
            return scored, False
        return scored, session.record_score(lead_id, scored[0], policy) is not None
