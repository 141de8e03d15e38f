"""Scoring leads with a bundle: the one path shared by the service and `leadscore score`.

`LeadIn` is the request schema (pydantic): the service validates bodies with it, the batch
scorer validates file rows with it. `score_lead` turns one validated lead into a response
(the service); `score_read_leads` answers many read leads at once (POST /score_batch, and the
JSON lines `model.lines` reads alone), `answers_json` the same without reasons from leads read
in columns (the common JSON lines); `score_table` scores validated lead and interaction tables
in batch with vectorised features (`leadscore score` on a data folder).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import attrgetter, is_
from typing import Annotated, Any, Literal, NamedTuple, cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.config import JsonDict
from pydantic_core import to_json

from features.engine import (
    FEW_ROWS,
    BehaviourPlan,
    FeatureRows,
    assemble_rows,
    behaviour_matrix,
    build_event_index,
    outside_vocabulary,
    snapshot_features,
    type_slots,
)
from features.schema import LeadSchema
from features.spec import FeatureSpec
from model.bundle import ScoringModel, SubScoreCell
from model.compiled import CompileMode
from model.trend import TREND_LABELS, TREND_PAST_DAYS, TrendLabel, past_instants, past_instants_each

AttributeValue = str | int | float | bool | None


class LeadRejected(ValueError):
    """A lead that cannot be scored because of what the client sent (not a fault of ours).

    Attributes:
        field: Dotted path of the offending field within the lead request, e.g. "as_of" or
            "attributes.employee_count".
        reason: What is wrong, without echoing the value (it may be personal data).
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
MAX_INTERACTIONS_PER_LEAD = 5_000
# A client's clock may run this far ahead of ours before its "now" counts as the future.
CLOCK_SKEW = timedelta(minutes=5)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_LISTED = 20  # values named in one warning; the rest are counted
MAX_SHOWN_CHARS = 100  # of a value quoted in a warning
UNSEEN = "(unseen)"  # a category value the model did not see in training, as the score log keeps it


def _reads_as_a_number(text: str) -> bool:
    # Any text Python reads as a number ("1717232400", " .5 ", "1.7e9", "2024", "inf"): pydantic
    # reads several such grammars as seconds since 1970 (or a year alone), more than a pattern of
    # ours would follow, and no ISO 8601 timestamp is a number.
    try:
        float(text)
    except ValueError:
        return False
    return True


def _timestamp_not_number(value: object) -> object:
    # pydantic would read a number, or text of one ("1717232400"), as seconds since 1970; the
    # schema says ISO 8601 text, and a CRM sending a number has most likely sent the wrong field.
    if isinstance(value, str) and ":" in value:  # a time of day: never a number (float() reads no ':')
        return value
    if isinstance(value, (int, float)):
        raise ValueError("must be an ISO 8601 timestamp (text), not a number")
    if isinstance(value, str) and _reads_as_a_number(value):
        raise ValueError("must be an ISO 8601 timestamp such as 2024-03-01T10:00:00Z, not a number written as text")
    return value


def _representable_in_utc(value: datetime) -> datetime:
    # 0001-01-01T00:00:00+14:00 is a valid ISO 8601 time whose UTC falls before year 1, which
    # Python cannot hold: converting it raises OverflowError, which would be a 500.
    if value.tzinfo is not None and value.year in (1, 9999):  # only the first and last years can leave UTC's range
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range: in UTC it falls outside the years 1 to 9999") from None
    return value


Timestamp = Annotated[datetime, BeforeValidator(_timestamp_not_number), AfterValidator(_representable_in_utc)]
"""A datetime given as ISO 8601 text (or a datetime in Python); numbers and numeric text are refused."""


def _in_utc(value: datetime) -> datetime:
    # `Timestamp`'s range check and the conversion to UTC in one call: a lead may carry thousands
    # of events, and each call of a validator costs about half a microsecond.
    if value.tzinfo is None:  # a time without a zone stays naive: scoring reads it in the model's declared zone
        return value
    return _representable_in_utc(value).astimezone(UTC) if value.year in (1, 9999) else value.astimezone(UTC)


EventTime = Annotated[datetime, BeforeValidator(_timestamp_not_number), AfterValidator(_in_utc)]
"""`Timestamp` in UTC when it has a zone (naive otherwise): an interaction's time."""

# What `not_in_the_future` enforces, for the JSON Schema of the fields it checks (the service's
# OpenAPI document): `formatMinimum` as JSON Schema's format-annotation proposal and ajv spell it;
# "now" has no keyword, so an extension names it.
IN_RANGE_SCHEMA: JsonDict = {"formatMinimum": "1970-01-01T00:00:00Z", "x-not-after": "now (server time, plus 5 minutes)"}


def to_utc(value: datetime) -> datetime:
    """`value` in UTC; a timestamp without a zone is read as UTC, as in the data contract (`as_of`)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def not_in_the_future(value: datetime) -> datetime:
    """`value` in UTC, refused when it is later than now (plus `CLOCK_SKEW`) or before 1970.

    Raises:
        ValueError: Naming the server's time, for the client to compare with its clock.
    """
    value = to_utc(value)
    now = datetime.now(UTC)
    if value > now + CLOCK_SKEW:
        raise ValueError(f"{value.isoformat()} is in the future (server time {now.isoformat(timespec='seconds')})")
    if value < EPOCH:
        raise ValueError(f"{value.isoformat()} is before 1970-01-01")
    return value


_AS_OF: TypeAdapter[datetime] = TypeAdapter(Timestamp)


def read_as_of(text: str) -> datetime:
    """A scoring time given as text (`leadscore score --as-of`), read as the service reads `as_of`.

    ISO 8601 text (no zone means UTC), not a number, from 1970 to now (plus `CLOCK_SKEW`).

    Returns:
        The time in UTC.

    Raises:
        ValueError: Why it cannot be read, without the value.
    """
    try:
        value = _AS_OF.validate_python(text)
    except ValidationError as error:
        problem = error.errors()[0]
        if problem["type"] == "value_error":
            raise ValueError(str(problem["ctx"]["error"])) from None
        raise ValueError(f"must be an ISO 8601 timestamp such as 2024-03-01T10:00:00Z ({problem['msg']})") from None
    return not_in_the_future(value)


def _listed(values: list[str]) -> str:
    shown = values[:MAX_LISTED]
    return f"{shown}" + (f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else "")


NAIVE_TIME = "ISO 8601; no zone means the zone the model's lead schema declares (UTC unless its training config set one)"


# The constraints of fields the JSON-lines fast path (`model.lines`) validates too, declared once.
LeadId = Annotated[str, Field(min_length=1, max_length=200)]
InteractionType = Annotated[str, Field(min_length=1, max_length=100, description="Interaction type, e.g. pricing_page_view")]


class InteractionIn(BaseModel):
    """One interaction of a lead."""

    model_config = ConfigDict(extra="allow")

    type: InteractionType
    occurred_at: Annotated[EventTime, Field(description=NAIVE_TIME)]
    channel: str | None = Field(
        default=None, description="The event's channel; splits a type the model's lead schema splits (split_by)"
    )
    properties: dict[str, AttributeValue] | None = Field(
        default=None,
        description="Event property -> number (e.g. pages: 4), named as the model's properties or as the export's "
        "columns; read by the model's lead schema (number marks, missing tokens); null or left out: missing.",
    )


class LeadIn(BaseModel):
    """A lead as a CRM sends it."""

    model_config = ConfigDict(extra="forbid")

    lead_id: LeadId
    created_at: Annotated[Timestamp, Field(description=NAIVE_TIME, json_schema_extra=IN_RANGE_SCHEMA)]
    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict,
        description="Attribute -> raw value, named as the model's features or as the export's own columns "
        "(e.g. \"Lead Source\"); read by the model's lead schema (stripping, missing tokens, number marks).",
    )
    interactions: Annotated[list[InteractionIn], Field(max_length=MAX_INTERACTIONS_PER_LEAD)] = Field(
        default_factory=list
    )

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # A naive time is read in the model's declared zone, and checked then (`score_lead`).
        return value if value.tzinfo is None else not_in_the_future(value)

    @field_validator("attributes")
    @classmethod
    def _finite(cls, value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        for key, v in value.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"attributes.{key}: must be a finite number or null, got {v}")
        return value


class ReasonOut(BaseModel):
    driver: str
    feature: str
    value: AttributeValue
    label: str
    contribution: float = Field(description="Probability points (0-100 scale) this driver adds")


class GridOut(BaseModel):
    points: float
    mql: bool
    rules_fired: list[dict[str, object]]


class ScoreOut(BaseModel):
    lead_id: str
    as_of: datetime
    probability: float
    score: int
    tier: Literal["hot", "warm", "cold"]
    mql: bool
    reasons: dict[str, list[ReasonOut]] | None
    point_grid: GridOut
    warnings: list[str]
    model_version: str
    fit: int | None = Field(
        default=None,
        description="0-100: the percentile, among the reference leads of the score scale, of the log-odds the lead's "
        "attributes (firmographics, role, source, email domain kind) contribute; null for bundles without the scale",
    )
    engagement: int | None = Field(
        default=None,
        description="0-100: the same for its behaviour (interaction counts and recencies, engagement, activity, lead age); "
        "null for bundles without the scale",
    )
    cell: SubScoreCell | None = Field(
        default=None,
        description="The fit x engagement cell: A/B/C the top/middle/bottom third of fit, 1/2/3 of engagement, "
        "thirds of the reference leads; null for bundles without the scale",
    )
    trend: TrendLabel | None = Field(
        default=None,
        description="improving / steady / declining: the score now against the score 7 days before, by thresholds set "
        "on validation leads at training time (model.trend); null when the lead did not exist 7 days before, or for "
        "bundles without thresholds",
    )
    score_7d_ago: int | None = Field(
        default=None,
        description="0-100: the score 7 days before as_of, from the lead's history cut there (later events unseen); "
        "null when the lead did not exist then, or for bundles without trend thresholds",
    )
    score_30d_ago: int | None = Field(default=None, description="0-100: the same 30 days before as_of")
    probability_by_horizon: dict[str, float] | None = Field(
        default=None,
        description="Days after as_of (\"7\", \"30\", the model's horizon) -> the probability of converting within them, "
        "from the bundle's discrete-time hazard (`model.hazard`; its horizon figure is the hazard's, not `probability`); "
        "null for bundles without a hazard",
    )
    expected_days_to_convert: float | None = Field(
        default=None,
        description="Mean days from as_of to conversion given that the lead converts within the horizon (the hazard's "
        "conversion-time distribution, constant hazard within each interval); null without a hazard or any chance",
    )


def creation_time(model: ScoringModel, lead: LeadIn) -> datetime:
    """The lead's `created_at` in UTC, a naive one read in the zone the model's lead schema declares.

    Raises:
        LeadRejected: A naive time ambiguous in that zone, or one in the future or before 1970.
    """
    created_at, problem = model.schema.instant(lead.created_at, model.schema.created_at)
    if created_at is None:
        raise LeadRejected("created_at", problem or "cannot be read")
    if lead.created_at.tzinfo is None:  # an aware one was checked when the request was read
        try:
            created_at = not_in_the_future(created_at)
        except ValueError as error:
            raise LeadRejected("created_at", str(error)) from None
    return created_at


def batch_as_of(model: ScoringModel, leads: Sequence[LeadIn]) -> datetime:
    """Now, or the latest creation time when a client's clock runs a little ahead of ours.

    A creation time that cannot be read is left out here: scoring that lead rejects it, naming it.
    """
    latest = datetime.now(UTC)
    for lead in leads:
        try:
            latest = max(latest, creation_time(model, lead))
        except LeadRejected:
            continue
    return latest


def score_lead(
    model: ScoringModel,
    lead: LeadIn,
    as_of: datetime | None = None,
    *,
    with_reasons: bool = True,
    top_k: int = 3,
    language: str = "en",
) -> ScoreOut:
    """Score one validated lead at `as_of` (now when None).

    The lead's raw values are read by the model's lead schema (`features.schema`), the rule
    training read its export by: attributes named as features or as the export's columns,
    stripped, missing tokens as missing, numbers written as text with their marks, naive times
    in the declared zone, interaction types through the type map. Interactions after `as_of`
    are not seen (and reported in `warnings`); unknown types are counted; interactions before
    `created_at` are ignored with a warning; unseen category values score as missing with a
    warning.

    Raises:
        LeadRejected: `as_of` before `created_at`, a value the lead schema cannot read (a
            numeric attribute that is no finite number, an attribute given twice, a naive time
            ambiguous in the declared zone), naming the field.
    """
    return score_lead_with_features(model, lead, as_of, with_reasons=with_reasons, top_k=top_k, language=language)[0]


def score_lead_with_features(
    model: ScoringModel,
    lead: LeadIn,
    as_of: datetime | None = None,
    *,
    with_reasons: bool = True,
    top_k: int = 3,
    language: str = "en",
) -> tuple[ScoreOut, dict[str, object]]:
    """`score_lead`, and the feature values the model saw (for the score log).

    Returns:
        (the score, feature name -> value: str or None for categories, float, NaN when
        missing, for numbers). A category value unseen in training is `UNSEEN`: the model
        scored it as unknown, and free text a client put there (an email in a job title) must
        not reach the score log, where `leadscore forget` could not find it.

    Raises:
        LeadRejected: As `score_lead`.
    """
    # One lead is a batch of one: its rows now, 7 and 30 days before (the trend) in one matrix, one predict.
    return score_read_leads(model, [read_lead(model, lead, as_of)], with_reasons=with_reasons, top_k=top_k, language=language)[0]


When = tuple[dict[str, float], float | None] | None


def _when(model: ScoringModel, matrix: NDArray[Any]) -> list[When]:
    """Each row's probability by horizon and expected days to convert from the bundle's hazard; None per row without one."""
    if model.hazard is None:
        return [None] * len(matrix)
    within, days = model.hazard.by_horizon(matrix)
    keys = model.hazard.horizon_keys()
    within = rounded_probability(within)
    return [
        ({k: float(p) for k, p in zip(keys, within[i], strict=True)}, None if np.isnan(days[i]) else round(float(days[i]), 2))
        for i in range(len(matrix))
    ]


def _fit_engagement(model: ScoringModel, matrix: NDArray[Any], explained: bool) -> tuple[NDArray[Any], NDArray[Any]] | None:
    """The rows' fit and engagement log-odds sums (`ScoringModel.fit_engagement_of`), or None when the bundle has no sub-score scale.

    With reasons (`explained`: the contributions were paid for), always; without them only when
    the sums cost about a prediction (`ScoringModel.contributions_are_cheap`), else None (no
    sub-scores).
    """
    if model.meta.subscores is None or not (explained or model.contributions_are_cheap()):
        return None
    return model.fit_engagement_of(matrix)


def _raw_without_reasons(
    model: ScoringModel, matrix: NDArray[Any], n: int, sums: tuple[NDArray[Any], NDArray[Any]] | None, predict: Callable[[NDArray[Any]], NDArray[Any]]
) -> NDArray[Any]:
    """Raw scores of `matrix`'s rows, the first `n` of which have their fit and engagement sums (`_fit_engagement`) or None.

    A forest's raw score of those rows is their sums plus the base value
    (`ScoringModel.raw_from_fit_engagement`): the rows of now are not predicted a second time.
    The other rows (the trend's past instants), or all of them without sums, are `predict`ed.
    Every path that scores without reasons goes through here, so a lead's score is the same to
    the bit in batch and alone.
    """
    now = None if sums is None else model.raw_from_fit_engagement(*sums)
    if now is None:
        return predict(matrix)
    return np.concatenate([now, predict(matrix[n:])]) if len(matrix) > n else now


def _explained_raw(
    model: ScoringModel, matrix: NDArray[Any], n: int, with_reasons: bool, predict: Callable[[NDArray[Any]], NDArray[Any]]
) -> tuple[NDArray[Any] | None, tuple[NDArray[Any], NDArray[Any]] | None, NDArray[Any]]:
    """Contributions (with reasons), the first `n` rows' fit and engagement sums, and every row's raw score.

    One pass over every row (now and the past instants): with reasons, the contributions (the
    raw score is their sum) and the sub-scores' sums from the same pass over the trees' tables;
    without them, the sub-scores' sums of the rows of now alone, when they cost about a
    prediction (`_fit_engagement`), and the raw scores (`_raw_without_reasons`, `predict`ing the
    other rows). The batch paths with reasons share it, so a lead's answer is the same to the bit.
    """
    if with_reasons and model.meta.subscores is not None:  # both from one pass over the trees' tables
        contrib, every_sum = model.contributions_and_fit_engagement(matrix)
        return contrib, (every_sum[0][:n], every_sum[1][:n]), contrib.sum(axis=1)
    if with_reasons:  # no sub-score scale: no sums
        contrib = model.contributions(matrix)
        return contrib, None, contrib.sum(axis=1)
    sums = _fit_engagement(model, matrix[:n], False)
    return None, sums, _raw_without_reasons(model, matrix, n, sums, predict)


def _row_of(sums: tuple[NDArray[Any], NDArray[Any]] | None, i: int) -> tuple[float, float] | None:
    return None if sums is None else (float(sums[0][i]), float(sums[1][i]))


class _Headline(NamedTuple):
    """A row's calibrated probability, as answered (`rounded_probability`), and its 0-100 score."""

    probability: float
    shown: float
    score: int


def _headlines(model: ScoringModel, raw: NDArray[Any]) -> list[_Headline]:
    """Each row's `_Headline` from its raw score: one calibration and one placement on the scale for all rows."""
    if len(raw) <= FEW_ROWS:
        few = model.meta.calibration.apply_each(raw.tolist())
        return [_Headline(p, s, score) for p, s, score in zip(few, rounded_each(few), model.score_0_100_each(few), strict=True)]
    probability = model.meta.calibration.apply(raw)
    shown, scores = rounded_probability(probability), model.score_0_100(probability)
    return [_Headline(p, s, score) for p, s, score in zip(probability.tolist(), shown.tolist(), scores.tolist(), strict=True)]


@dataclass(frozen=True)
class LeadRead:
    """A lead as the model's lead schema reads it, before features: what scoring it needs.

    Attributes:
        lead_id: Its id.
        as_of: When it is scored (UTC).
        created_s, as_of_s: Its creation time and `as_of`, epoch seconds.
        attributes: Feature name -> normalised value.
        times, types: Its kept interactions (at or after creation), in the order sent.
        properties: Event property -> value per kept interaction (NaN where it has none).
        warnings: What looked odd so far (unseen categories are added when scored).
    """

    lead_id: str
    as_of: datetime
    created_s: int
    as_of_s: int
    attributes: dict[str, object]
    times: list[int]
    types: list[str]
    properties: dict[str, list[float]]
    warnings: list[str]


@dataclass(frozen=True)
class _Interactions:
    """A lead's interactions as read by the lead schema (`_read_interactions`)."""

    times: list[int]
    types: list[str]
    properties: dict[str, list[float]]
    unused_properties: set[str]
    untyped: int
    early: int
    future: int


_OCCURRED_AT = attrgetter("occurred_at")
_TZINFO = attrgetter("tzinfo")
_PROPERTIES = attrgetter("properties")
_TYPE_AND_CHANNEL = attrgetter("type", "channel")


def _read_interactions(schema: LeadSchema, spec: FeatureSpec, interactions: Sequence[InteractionIn], created_s: int, as_of_s: int) -> _Interactions:
    """The kept interactions (typed, at or after creation) of one lead, in the order sent, and what was set aside.

    The common case, times with a zone and no event properties, is read in comprehensions; any
    other lead event by event (`_read_interactions_one_by_one`), with the same result
    (tests/test_scoring_fast_paths.py).

    Raises:
        LeadRejected: A time or property the schema cannot read, naming the first such field.
    """
    # Each field of every event at once (`map` of an attrgetter runs in C: a lead may send thousands).
    instants = list(map(_OCCURRED_AT, interactions))
    if not all(map(is_, map(_TZINFO, instants), repeat(UTC))) or any(map(_PROPERTIES, interactions)):
        return _read_interactions_one_by_one(schema, spec, interactions, created_s, as_of_s)
    keys = list(map(_TYPE_AND_CHANNEL, interactions))
    # A lead's events repeat a few types and channels: each pair is read by the schema once.
    type_of = schema.interaction_types_of(set(keys))
    read_types = list(map(type_of.__getitem__, keys))
    seconds = list(map(int, map(datetime.timestamp, instants)))
    untyped = read_types.count(None)
    if untyped or (seconds and min(seconds) < created_s):
        typed = [(t, kind) for t, kind in zip(seconds, read_types, strict=True) if kind is not None]
        times = [t for t, _kind in typed if t >= created_s]
        types = [kind for t, kind in typed if t >= created_s]
        early = len(typed) - len(times)
    else:
        times, types, early = seconds, cast(list[str], read_types), 0  # no None among them
    future = sum(1 for t in times if t > as_of_s)
    properties = {name: [math.nan] * len(times) for name in spec.properties}
    return _Interactions(times, types, properties, set(), untyped, early, future)


def _read_interactions_one_by_one(
    schema: LeadSchema, spec: FeatureSpec, interactions: Sequence[InteractionIn], created_s: int, as_of_s: int
) -> _Interactions:
    """`_read_interactions` for any lead: naive times read in the schema's zone, event properties read, problems raised in order."""
    times: list[int] = []
    types: list[str] = []
    future = early = untyped = 0
    # Property -> value per kept event, aligned with `times` (NaN where an event has none).
    properties: dict[str, list[float]] = {name: [] for name in spec.properties}
    unused_properties: set[str] = set()
    # A lead's events repeat a few types and channels: each pair is read by the schema once.
    type_of: dict[tuple[str, str | None], str | None] = {}
    no_properties: dict[str, float] = {}
    for i, event in enumerate(interactions):
        occurred_at, problem = schema.instant(event.occurred_at, zone=schema.interaction_timezone)
        if occurred_at is None:
            raise LeadRejected(f"interactions.{i}.occurred_at", problem or "cannot be read")
        key = (event.type, event.channel)
        if key not in type_of:
            type_of[key] = schema.interaction_type(event.type, event.channel)
        event_type = type_of[key]
        if event_type is None:  # only whitespace: training sets such a row aside ("have no type")
            untyped += 1
            continue
        if event.properties:
            read, unused, property_problems = schema.normalise_event_properties(event.properties, f"interactions.{i}.properties")
            if property_problems:
                raise LeadRejected(property_problems[0].field, property_problems[0].reason)
            unused_properties.update(unused)
        else:
            read = no_properties
        t = int(occurred_at.timestamp())
        if t < created_s:
            early += 1
            continue
        if t > as_of_s:
            future += 1
        times.append(t)
        types.append(event_type)
        for name, column in properties.items():
            column.append(read.get(name, math.nan))
    return _Interactions(times, types, properties, unused_properties, untyped, early, future)


def read_lead(model: ScoringModel, lead: LeadIn, as_of: datetime | None = None) -> LeadRead:
    """Read one validated lead at `as_of` (now when None) by the model's lead schema, with its warnings.

    Raises:
        LeadRejected: As `score_lead`.
    """
    schema = model.schema
    created_at = creation_time(model, lead)
    # A lead created "now" by a client whose clock runs a little ahead is scored at its creation.
    as_of = to_utc(as_of) if as_of is not None else max(datetime.now(UTC), created_at)
    if as_of < created_at:
        raise LeadRejected("created_at", f"{created_at.isoformat()} is after as_of ({as_of.isoformat()}): a lead cannot be scored before it exists")
    # The lead schema reads the raw values (names as exported or as features, stripping,
    # missing tokens, number marks): the rule the training loaders applied to this lead's row.
    attributes, extra, problems = schema.normalise_attributes(lead.attributes)
    if problems:
        raise LeadRejected(problems[0].field, problems[0].reason)
    spec = model.spec
    created_s = int(created_at.timestamp())
    as_of_s = int(as_of.timestamp())
    events = _read_interactions(schema, spec, lead.interactions, created_s, as_of_s)
    times, types, properties = events.times, events.types, events.properties
    unknown = outside_vocabulary(set(types), spec) if spec.interactions else []
    missing = sorted(set(spec.attribute_columns()) - set(attributes))
    warnings = read_warnings(
        spec, events.untyped, events.early, events.future, len(types), unknown, sorted(events.unused_properties), extra, missing
    )
    return LeadRead(lead.lead_id, as_of, created_s, as_of_s, attributes, times, types, properties, warnings)


def read_warnings(
    spec: FeatureSpec,
    untyped: int,
    early: int,
    future: int,
    kept: int,
    unknown: list[str],
    unused_properties: list[str],
    extra: list[str],
    missing: list[str],
) -> list[str]:
    """A read lead's warnings (`LeadRead.warnings`), in their order.

    Args:
        spec: The model's feature spec.
        untyped, early, future: Interactions without a type, before `created_at` (both set aside), after `as_of`.
        kept: Interactions kept.
        unknown: The kept interactions' types outside the vocabulary, sorted.
        unused_properties: Event properties the model does not read, sorted.
        extra: Attributes the model does not read, as sent.
        missing: The model's attributes not given, sorted.
    """
    warnings: list[str] = []
    if untyped:
        warnings.append(f"interactions: {untyped} without a type ignored")
    if early:
        warnings.append(f"interactions: {early} before created_at ignored")
    if future:
        warnings.append(f"interactions: {future} after as_of not seen by this score")
    if not spec.interactions and kept:
        warnings.append(f"interactions: {kept} ignored: this model was trained on a static export (attributes only)")
    if unknown:
        warnings.append(f"interactions: types outside the vocabulary counted as other: {_listed(unknown)}")
    if unused_properties:
        warnings.append(f"interactions: properties not used by this model: {_listed(unused_properties)}")
    if extra:
        warnings.append(f"attributes not used by this model: {_listed(sorted(extra))}")
    if missing:
        warnings.append(f"attributes missing, scored as unknown: {missing}")
    return warnings


def _scored_row(
    model: ScoringModel,
    read: LeadRead,
    rows: FeatureRows,
    i: int,
    headline: _Headline,
    contributions: NDArray[Any] | None,
    fit_engagement: tuple[float, float] | None,
    top_k: int,
    language: str,
    when: When = None,
) -> tuple[ScoreOut, dict[str, object]]:
    """The answer for row `i` of `rows` (the features of `read`): from its probability and score (`_headlines`), for
    reasons its contributions, for sub-scores its fit and engagement log-odds sums (`_fit_engagement`), and for the
    horizons `_when`'s row."""
    warnings = list(read.warnings)
    unseen = []
    for name in model.meta.categorical_levels:
        value = rows.categorical[name][i]
        if value is not None and value not in model._codes[name]:
            unseen.append(name)
            warnings.append(_unseen_warning(name, value))
    values = rows.row(i)
    if contributions is not None:
        up, down = model.reason_answers(contributions, values, top_k=top_k, language=language)
        reasons: dict[str, list[dict[str, object]]] | None = {"up": up, "down": down}
    else:
        reasons = None
    probability = headline.probability
    points, fired = model.meta.grid.score_row(values)
    subscores = model.subscores(*fit_engagement) if fit_engagement is not None else None
    fit, engagement, cell = subscores if subscores is not None else (None, None, None)
    # One validation of the whole answer, its reasons and grid as plain data: as ScoreOut(...)
    # with ReasonOut(...) and GridOut(...) inside gives, at a third of the cost.
    answer = _SCORE_OUT.validate_python({
        "lead_id": read.lead_id,
        "as_of": read.as_of,
        "probability": headline.shown,
        "score": headline.score,
        "tier": model.tier(probability),
        "mql": model.is_mql(probability),
        "reasons": reasons,
        "point_grid": {"points": points, "mql": bool(model.meta.grid.is_mql(points)), "rules_fired": fired},
        "warnings": warnings,
        "model_version": model.meta.model_version,
        "fit": fit,
        "engagement": engagement,
        "cell": cell,
        "probability_by_horizon": when[0] if when is not None else None,
        "expected_days_to_convert": when[1] if when is not None else None,
    })  # fmt: skip
    return answer, {**values, **dict.fromkeys(unseen, UNSEEN)}


_SCORE_OUT = ScoreOut.__pydantic_validator__


def _unseen_warning(name: str, value: str) -> str:
    shown = value if len(value) <= MAX_SHOWN_CHARS else value[:MAX_SHOWN_CHARS] + "..."
    return f"attributes.{name}: value {shown!r} unseen in training, scored as unknown"


def score_read_leads(
    model: ScoringModel,
    reads: Sequence[LeadRead],
    *,
    with_reasons: bool = False,
    top_k: int = 3,
    language: str = "en",
) -> list[tuple[ScoreOut, dict[str, object]]]:
    """Score many read leads at once: `score_lead_with_features`' answers, with vectorised features and predictions.

    The features of all leads come from one event index (`features.engine`, the machinery of
    `snapshot_features`), and the model encodes and predicts (or explains) every row in one
    call; each answer is then made as for one lead (`_scored_row`), so probabilities, scores,
    tiers, reasons, grid and warnings are those of `score_lead_with_features` (tests/test_batch_scoring.py).

    Args:
        model: The loaded bundle.
        reads: Leads read by `read_lead` (their `as_of` may differ).
        with_reasons, top_k, language: As `score_lead`.

    Returns:
        (score, features the model saw) per lead, in order.
    """
    if not reads:
        return []
    n = len(reads)
    with_trend = model.meta.trend is not None
    # Rows 0..n-1 are the leads now; with a trend, then n rows 7 days before and n 30 days before.
    rows = lead_rows(reads, model.spec, with_past=with_trend, plan=model.behaviour_plan)
    matrix = model.encode(rows)
    when = _when(model, matrix[:n])
    contrib, sums, raw = _explained_raw(model, matrix, n, with_reasons, model.raw)
    headlines = _headlines(model, raw[:n])
    scored = [
        _scored_row(model, r, rows, i, headlines[i], None if contrib is None else contrib[i], _row_of(sums, i), top_k, language,
                    when[i])
        for i, r in enumerate(reads)
    ]  # fmt: skip
    if with_trend:
        past = past_scores(model, raw[n:], np.array([r.created_s for r in reads]), np.array([r.as_of_s for r in reads]))
        for i, (out, _features) in enumerate(scored):
            _set_trend(model, out, past[:, i])
    return scored


def past_scores(model: ScoringModel, raw_past: NDArray[Any], created_s: NDArray[Any], as_of_s: NDArray[Any]) -> NDArray[Any]:
    """The leads' 0-100 scores at the trend's past instants (`model.trend.past_instants`), -1 where a lead did not exist yet.

    Args:
        model: The loaded bundle.
        raw_past: Raw scores of the rows at the past instants: one block of n leads per instant.
        created_s, as_of_s: Each lead's creation time and scoring time, epoch seconds.

    Returns:
        int (len(TREND_PAST_DAYS), n).
    """
    n = len(created_s)
    if len(raw_past) <= FEW_ROWS:  # a lead or two: in Python floats, the same scores
        placed = model.score_0_100_each(model.meta.calibration.apply_each(raw_past.tolist()))
        created = np.asarray(created_s).tolist()
        few = [
            [-1 if instant < created[i] else placed[k * n + i] for i, instant in enumerate(instants)]
            for k, instants in enumerate(past_instants_each(np.asarray(as_of_s).tolist()))
        ]
        return np.array(few, dtype=int).reshape(len(TREND_PAST_DAYS), n)
    scores = model.score_0_100(model.meta.calibration.apply(raw_past)).reshape(len(TREND_PAST_DAYS), n)
    scores[past_instants(as_of_s) < np.asarray(created_s)[None, :]] = -1
    return scores


def _set_trend(model: ScoringModel, out: ScoreOut, past: NDArray[Any]) -> None:
    # `past`: the lead's scores 7 and 30 days before (-1: it did not exist yet).
    thresholds = model.meta.trend
    assert thresholds is not None  # past scores are computed only with thresholds
    week, month = (None if s < 0 else int(s) for s in past)
    out.score_7d_ago, out.score_30d_ago = week, month
    out.trend = thresholds.label(out.score, week)


def lead_rows(reads: Sequence[LeadRead], spec: FeatureSpec, *, with_past: bool = False, plan: BehaviourPlan | None = None) -> FeatureRows:
    """The features of many read leads, one row each, from one event index: `lead_features` for a batch.

    With `with_past`, also each lead 7 and 30 days before its `as_of` (`model.trend.past_instants`:
    its history cut there, later events unseen): rows 0..n-1 now, then n rows per past instant.
    `plan`: the spec's `BehaviourPlan`, when the caller keeps it (a loaded model does).
    """
    return columns_rows(LeadColumns.of(reads, spec), spec, with_past=with_past, plan=plan)


@dataclass(frozen=True)
class LeadColumns:
    """Many read leads in columns: `LeadRead`'s fields for a batch, its interactions one array for all leads.

    Attributes:
        lead_ids: Each lead's id.
        as_of: When each is scored (UTC).
        created_s, as_of_s: Each one's creation time and `as_of`, epoch seconds (int64).
        attributes: Each column of `spec.attribute_columns()` -> normalised value per lead (None when not given).
        event_counts: How many kept interactions each lead has (int64).
        times, slots: The kept interactions, lead after lead, each lead's in the order sent: epoch seconds and
            type slot (`features.engine.type_slots`), int64.
        properties: float64 (interactions, `spec.properties`) values, NaN where an interaction has none; None
            when the spec reads no property.
        warnings: Each lead's warnings so far (`LeadRead.warnings`).
    """

    lead_ids: list[str]
    as_of: list[datetime]
    created_s: NDArray[np.int64]
    as_of_s: NDArray[np.int64]
    attributes: dict[str, list[object]]
    event_counts: NDArray[np.int64]
    times: NDArray[np.int64]
    slots: NDArray[np.int64]
    properties: NDArray[np.float64] | None
    warnings: list[list[str]]

    @classmethod
    def of(cls, reads: Sequence[LeadRead], spec: FeatureSpec) -> LeadColumns:
        """The columns of leads read one by one (`read_lead`)."""
        properties = None
        if spec.properties:
            properties = np.full((sum(len(r.times) for r in reads), len(spec.properties)), np.nan)
            for j, name in enumerate(spec.properties):
                properties[:, j] = np.array([v for r in reads for v in r.properties[name]], dtype=np.float64)
        return cls(
            lead_ids=[r.lead_id for r in reads],
            as_of=[r.as_of for r in reads],
            created_s=np.array([r.created_s for r in reads], dtype=np.int64),
            as_of_s=np.array([r.as_of_s for r in reads], dtype=np.int64),
            attributes={c: [r.attributes.get(c) for r in reads] for c in spec.attribute_columns()},
            event_counts=np.array([len(r.times) for r in reads], dtype=np.int64),
            # One lead (a request): its lists as they are, not rebuilt event by event.
            times=np.array(reads[0].times if len(reads) == 1 else [t for r in reads for t in r.times], dtype=np.int64),
            slots=type_slots(reads[0].types if len(reads) == 1 else [t for r in reads for t in r.types], spec),
            properties=properties,
            warnings=[r.warnings for r in reads],
        )


def columns_rows(leads: LeadColumns, spec: FeatureSpec, *, with_past: bool = False, plan: BehaviourPlan | None = None) -> FeatureRows:
    """`lead_rows` of leads in columns: one row per lead (then, `with_past`, one per lead and past instant)."""
    n = len(leads.lead_ids)
    index = build_event_index(
        np.repeat(np.arange(n, dtype=np.int64), leads.event_counts),
        leads.times,
        leads.slots,
        n_leads=n,
        n_slots=len(spec.interaction_types) + 1,
        properties=leads.properties,
    )
    k = 1 + len(TREND_PAST_DAYS) if with_past else 1
    if n <= FEW_ROWS:  # a lead or a few: the snapshots' columns in Python (numpy's small calls cost more)
        as_of, created = leads.as_of_s.tolist(), leads.created_s.tolist()
        past = [t for block in past_instants_each(as_of) for t in block] if with_past else []
        instants = np.array(as_of + past, dtype=np.int64)  # now, then each past instant's block
        snap_lead, snap_created = np.array(list(range(n)) * k, dtype=np.int64), np.array(created * k, dtype=np.int64)
    else:
        instants = np.concatenate([leads.as_of_s, *past_instants(leads.as_of_s)]) if with_past else leads.as_of_s
        snap_lead, snap_created = np.tile(np.arange(n, dtype=np.int64), k), np.tile(leads.created_s, k)
    behaviour = behaviour_matrix(index, snap_lead, instants, snap_created, spec, plan)
    return assemble_rows(spec, leads.attributes, behaviour, repeats=k, plan=plan)


def answers_json(
    model: ScoringModel,
    leads: LeadColumns,
    compiled: CompileMode = CompileMode.auto,
    *,
    with_reasons: bool = False,
    top_k: int = 3,
    language: str = "en",
) -> list[str]:
    """The answers of many read leads, as JSON: `score_read_leads`' answers' `model_dump_json()`, in columns.

    The features, predictions (or exact contributions), sub-scores, grid points and trend of all
    leads are computed at once (as `score_read_leads` computes them), each lead's reasons are
    ranked (`ScoringModel.ranked_drivers_of`, all at once) and phrased as for one lead, and each
    answer is serialised from plain values by pydantic-core, the serialiser of `ScoreOut`, with
    `ScoreOut`'s keys and value types: no model object per lead (tests/test_json_lines.py
    compares the two byte for byte).

    Args:
        model: The loaded bundle.
        leads: The leads, read (`LeadColumns`).
        compiled: Without reasons, when to predict with the compiled forest (`score_table`'s
            `compiled`; the same raw scores).
        with_reasons, top_k, language: As `score_lead`.

    Returns:
        One JSON text per lead, in order.
    """
    n = len(leads.lead_ids)
    if not n:
        return []
    with_trend = model.meta.trend is not None
    rows = columns_rows(leads, model.spec, with_past=with_trend, plan=model.behaviour_plan)
    matrix = model.encode(rows)
    when = _when(model, matrix[:n])
    contrib, sums, raw = _explained_raw(model, matrix, n, with_reasons, lambda rows_: _batch_raw(model, rows_, compiled))
    reasons: list[Any] = [None] * n
    if contrib is not None:
        reasons = []
        # Ranked a block at a time: a block's rankings are made at once and phrased before the
        # next, so they do not pile up for the garbage collector to walk.
        for start in range(0, n, _RANKED_BLOCK):
            for i, ranked in enumerate(model.ranked_drivers_of(contrib[start : min(n, start + _RANKED_BLOCK)], top_k), start):
                up, down = model.ranked_answers(ranked, rows.row(i), language)
                reasons.append({"up": up, "down": down})
    probability = model.meta.calibration.apply(raw[:n])
    shown, scores = rounded_probability(probability).tolist(), model.score_0_100(probability).tolist()
    points, fired, grid_mql = _grid_answers(model, rows, n)
    warnings = _with_unseen_warnings(model, rows, leads.warnings)
    missing: list[Any] = [None] * n
    fits, engagements, cells = missing, missing, missing
    if sums is not None and model.meta.subscores is not None:
        fit, engagement, cell = subscore_columns(model, sums, n)
        fits, engagements, cells = fit.astype(int).tolist(), engagement.astype(int).tolist(), cell.astype(str).tolist()
    week, month, trend = missing, missing, missing
    thresholds = model.meta.trend
    if thresholds is not None:
        past = past_scores(model, raw[n:], leads.created_s, leads.as_of_s)
        week, month = ([None if s < 0 else s for s in row] for row in past.tolist())
        trend = [thresholds.label(now, before) for now, before in zip(scores, week, strict=True)]
    version, tier, is_mql = model.meta.model_version, model.tier, model.is_mql
    horizons = [None if w is None else w[0] for w in when]
    days = [None if w is None else w[1] for w in when]
    # `ScoreOut`'s fields in its order, each value of its type: the text `model_dump_json()` gives.
    return [
        to_json(
            {"lead_id": lead_id, "as_of": at, "probability": shown_p, "score": score, "tier": tier(p), "mql": is_mql(p), "reasons": lead_reasons,
             "point_grid": {"points": grid_points, "mql": grid_is_mql, "rules_fired": rules_fired}, "warnings": said,
             "model_version": version, "fit": fit_score, "engagement": engagement_score, "cell": in_cell, "trend": trend_label,
             "score_7d_ago": before_7, "score_30d_ago": before_30, "probability_by_horizon": by_horizon,
             "expected_days_to_convert": expected_days},
            inf_nan_mode="null",  # `ScoreOut`'s default
        ).decode()
        for (lead_id, at, p, shown_p, score, lead_reasons, grid_points, grid_is_mql, rules_fired, said, fit_score, engagement_score,
             in_cell, trend_label, before_7, before_30, by_horizon, expected_days)
        in zip(leads.lead_ids, leads.as_of, probability.tolist(), shown, scores, reasons, points, grid_mql, fired, warnings, fits,
               engagements, cells, trend, week, month, horizons, days, strict=True)
    ]  # fmt: skip


_RANKED_BLOCK = 256  # leads whose reasons `answers_json` ranks in one call


def _grid_answers(model: ScoringModel, rows: FeatureRows, n: int) -> tuple[list[float], list[list[dict[str, object]]], list[bool]]:
    """The point grid of the first n rows, as `PointGrid.score_row` gives it for each: points, rules fired, MQL by the grid."""
    grid = model.meta.grid
    values = {**rows.categorical, **rows.numeric}
    frame = pd.DataFrame({f: values[f][:n] for f in grid.required_features() if f in values})
    fired = grid.fired_frame(frame)
    # Leads share a few patterns of rules fired: each pattern's sum (in rule order, as `score_row` adds) and list made once.
    patterns, pattern_of = np.unique(np.packbits(fired, axis=1), axis=0, return_inverse=True)
    answers: list[tuple[float, list[dict[str, object]], bool]] = []
    for pattern in np.unpackbits(patterns, axis=1, count=len(grid.rules)).astype(bool).tolist():
        total, listed = grid.verdict(pattern)
        answers.append((total, listed, bool(grid.is_mql(total))))
    of_row = [answers[k] for k in pattern_of.reshape(-1).tolist()]
    return [a[0] for a in of_row], [a[1] for a in of_row], [a[2] for a in of_row]


def _with_unseen_warnings(model: ScoringModel, rows: FeatureRows, warnings: list[list[str]]) -> list[list[str]]:
    """Each lead's warnings, then one per category value the model did not see in training (`_scored_row`'s, in its order)."""
    out = list(warnings)
    copied: set[int] = set()  # the leads whose list is a copy of theirs, to append to
    for name in model.meta.categorical_levels:
        values = rows.categorical[name][: len(warnings)]
        codes, distinct = pd.factorize(values, use_na_sentinel=True)  # None: -1, never unseen
        unseen = np.array([v not in model._codes[name] for v in distinct] + [False], dtype=bool)
        for i in np.flatnonzero(unseen[codes]).tolist():
            if i not in copied:
                out[i] = list(out[i])
                copied.add(i)
            out[i].append(_unseen_warning(name, values[i]))
    return out


def rounded_probability(probability: NDArray[Any]) -> NDArray[Any]:
    """Probabilities as answered (6 decimals): one rounding for the one-lead and batch paths."""
    return np.round(probability, 6)


def rounded_each(probability: Sequence[float]) -> list[float]:
    """`rounded_probability` of a few Python floats: the same values to the bit.

    numpy rounds to 6 decimals as rint(p * 1e6) / 1e6; Python's `round` to an integer rounds
    half to even as `rint` does, and both sides use IEEE 754 multiplication and division
    (`tests/test_scoring_fast_paths.py`). A NaN stays NaN.
    """
    return [round(p * 1e6) / 1e6 if p == p else p for p in probability]


def schema_applied(model: ScoringModel, leads: pd.DataFrame, interactions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validated tables read by the model's lead schema, as `score_lead` reads one lead.

    Tables validated under another schema (a data folder read with the contract's defaults, for
    a model trained on an export that declares missing tokens) get the model's rules; tables
    validated under this one are unchanged (the rules are idempotent).

    Raises:
        ValueError: A value the schema cannot read, naming the column and a few lead ids.
    """
    schema = model.schema
    leads, bad_values = schema.normalise_frame(leads)
    for column, bad in bad_values.items():
        examples = leads.loc[bad, "lead_id"].astype(str).head(3).tolist()
        raise ValueError(
            f"leads: {int(bad.sum())} value(s) of {column} the model's lead schema cannot read (e.g. lead_id {examples}): "
            "validate the tables first (features.contract.validate)"
        )
    if (schema.type_map or schema.split_types) and len(interactions):
        channels = interactions.get("channel")
        interactions = interactions.assign(type=schema.interaction_type_column(interactions["type"], channels))
    for prop in schema.event_properties:
        if prop.name in interactions:
            values, bad = schema.event_property_column(interactions[prop.name], prop.name)
            if bad.any():
                examples = interactions.loc[bad, "lead_id"].astype(str).head(3).tolist()
                raise ValueError(
                    f"interactions: {int(bad.sum())} value(s) of the property {prop.name} the model's lead schema cannot read "
                    f"(e.g. lead_id {examples}): validate the tables first"
                )
            interactions = interactions.assign(**{prop.name: values})
    return leads, interactions


TABLE_COLUMNS: tuple[str, ...] = (
    "lead_id", "as_of", "probability", "score", "tier", "mql", "model_version", "grid_points", "top_reason",
    "fit", "engagement", "cell", "score_7d_ago", "score_30d_ago", "trend",
)
# With a hazard in the bundle, `score_table` adds `probability_within_{days}d` per horizon and `expected_days_to_convert`.
HORIZON_COLUMN_PREFIX = "probability_within_"


def table_columns(model: ScoringModel, top_reasons: int = 1) -> list[str]:
    """The columns `score_table` gives for this bundle: `TABLE_COLUMNS` (with `reason_2`.. `reason_{top_reasons}`
    after `top_reason`), then the hazard's when it has one."""
    columns = _lead_columns(top_reasons)
    if model.hazard is None:
        return columns
    return [*columns, *(f"{HORIZON_COLUMN_PREFIX}{k}d" for k in model.hazard.horizon_keys()), "expected_days_to_convert"]


def _lead_columns(top_reasons: int) -> list[str]:
    # `TABLE_COLUMNS` with `reason_2` .. after `top_reason`: every bundle's columns.
    at = TABLE_COLUMNS.index("top_reason") + 1
    return [*TABLE_COLUMNS[:at], *reason_columns(top_reasons)[1:], *TABLE_COLUMNS[at:]]


def reason_columns(top_reasons: int) -> list[str]:
    """`top_reason`, then `reason_2` .. `reason_{top_reasons}`: the reasons up of `score_table`, strongest first."""
    return ["top_reason", *(f"reason_{k}" for k in range(2, top_reasons + 1))]


def score_table(
    model: ScoringModel,
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    as_of: datetime,
    *,
    with_reasons: bool = False,
    top_reasons: int = 1,
    language: str = "en",
    compiled: CompileMode = CompileMode.auto,
) -> pd.DataFrame:
    """Score every lead of validated tables at one `as_of`: the batch path.

    Features come from `snapshot_features` (the training path, equal to `lead_features` by the
    parity tests), so a lead gets the probability, score, tier, MQL flag and grid points
    `score_lead` gives it. Leads created after `as_of` cannot be scored then and are left out
    (the caller reports how many).

    Args:
        model: The loaded bundle.
        leads: Validated leads (`features.contract.Dataset.leads`): `lead_id`, `created_at`
            and the attribute columns of `model.spec`.
        interactions: Validated interactions: `lead_id`, `occurred_at`, `type`.
        as_of: Scoring time (a time without a zone is UTC).
        with_reasons: Also give each lead's strongest reason up (`top_reason`), from exact
            TreeSHAP: several times the cost of scoring alone.
        top_reasons: With reasons, how many reasons up per lead: `top_reason`, then the
            columns `reason_2` .. `reason_{top_reasons}` (None where fewer drivers lift the
            score); the labels `score_lead` gives its first reasons up. Without reasons, the
            columns are there, empty.
        language: Language of the reasons: "en" or "fr".
        compiled: When to predict with the compiled forest (`model.compiled`; same raw
            scores, several times faster on large batches): the trend's past instants, and
            the leads now when the bundle has no sub-score scale. The leads now otherwise get
            their raw score as TreeSHAP gives it, the sum of the contributions (with reasons)
            or of the fit and engagement sums the sub-scores read (without).

    Returns:
        One row per scored lead, in the order of `leads`, with the columns `table_columns`
        (`top_reason` is None without reasons or when nothing lifts the score); with a hazard
        in the bundle, then `probability_within_{days}d` per horizon and `expected_days_to_convert`.
        `fit`, `engagement` (nullable integers) and `cell` are `ScoreOut`'s, missing for a bundle
        without the scale, or without reasons when contributions cost more than a prediction;
        `score_7d_ago`, `score_30d_ago` and `trend` are `ScoreOut`'s too, from snapshots of the
        leads at those instants in the same feature pass, missing where a lead did not exist yet
        or the bundle has no trend thresholds.

    Raises:
        ValueError: `top_reasons` below 1, or a value the model's lead schema cannot read.
    """
    if top_reasons < 1:
        raise ValueError(f"top_reasons: at least 1 (top_reason), got {top_reasons}")
    as_of = to_utc(as_of)
    stamp = pd.Timestamp(as_of)
    leads, interactions = schema_applied(model, leads, interactions)
    scorable = leads[leads["created_at"] <= stamp]
    snapshots = pd.DataFrame({"lead_id": scorable["lead_id"].reset_index(drop=True), "as_of": stamp})
    # Columns holding one value or a few (as_of, tier, model version) are categoricals: a
    # million copies of a string cost more than the scoring.
    same = np.zeros(len(snapshots), dtype=np.int8)
    out = pd.DataFrame({"lead_id": snapshots["lead_id"], "as_of": pd.Categorical.from_codes(same, [as_of.isoformat()])})
    if scorable.empty:
        return out.reindex(columns=table_columns(model, top_reasons))
    n = len(snapshots)
    # With a trend, the leads 7 and 30 days before (those created by then) follow the n rows of now.
    past, past_at = past_snapshots(scorable, stamp) if model.meta.trend is not None else (snapshots.iloc[:0], np.empty(0, np.int64))
    rows_all = snapshot_features(leads, interactions, pd.concat([snapshots, past], ignore_index=True), model.spec)
    matrix_all = model.encode(rows_all)
    rows = FeatureRows({k: v[:n] for k, v in rows_all.categorical.items()}, {k: v[:n] for k, v in rows_all.numeric.items()})
    matrix = matrix_all[:n]
    sums = _fit_engagement(model, matrix, with_reasons)
    if with_reasons:
        contrib = model.contributions(matrix)
        raw = contrib.sum(axis=1)
        raw_past = _batch_raw(model, matrix_all[n:], compiled)
    else:
        raw_all = _raw_without_reasons(model, matrix_all, n, sums, lambda rows: _batch_raw(model, rows, compiled))
        raw, raw_past = raw_all[:n], raw_all[n:]
    probability = model.meta.calibration.apply(raw)
    tiers = model.meta.tiers
    out["probability"] = rounded_probability(probability)
    out["score"] = model.score_0_100(probability)
    tier_code = (probability >= tiers.warm).astype(np.int8) + (probability >= tiers.hot)
    out["tier"] = pd.Categorical.from_codes(tier_code, categories=["cold", "warm", "hot"])
    out["mql"] = probability >= model.meta.mql_probability
    out["model_version"] = pd.Categorical.from_codes(same, [model.meta.model_version])
    grid = model.meta.grid
    # Only the columns the grid reads: a frame of every feature costs more than the grid.
    values = {**rows.categorical, **rows.numeric}
    out["grid_points"] = grid.score_frame(pd.DataFrame({f: values[f] for f in grid.required_features() if f in values}))
    labels = reasons_up(model, contrib, rows, language, top_reasons) if with_reasons else [[None] * n] * top_reasons
    for column, ranked in zip(reason_columns(top_reasons), labels, strict=True):
        out[column] = ranked
    out["fit"], out["engagement"], out["cell"] = subscore_columns(model, sums, n)
    week: NDArray[np.int64] = np.full(n, -1, dtype=np.int64)
    month = week
    if model.meta.trend is not None:
        scores = np.full(2 * n, -1, dtype=np.int64)
        scores[past_at] = model.score_0_100(model.meta.calibration.apply(raw_past))
        week, month = scores[:n], scores[n:]
        out["trend"] = pd.Categorical.from_codes(model.meta.trend.label_codes(out["score"].to_numpy(), week), categories=list(TREND_LABELS))
    else:
        out["trend"] = pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8), categories=list(TREND_LABELS))
    out["score_7d_ago"], out["score_30d_ago"] = (pd.arrays.IntegerArray(s, s < 0) for s in (week, month))
    out = out[_lead_columns(top_reasons)]
    if model.hazard is not None:
        within, days = model.hazard.by_horizon(matrix)
        for j, key in enumerate(model.hazard.horizon_keys()):
            out[f"{HORIZON_COLUMN_PREFIX}{key}d"] = rounded_probability(within[:, j])
        out["expected_days_to_convert"] = np.round(days, 2)
    return out


def _batch_raw(model: ScoringModel, matrix: NDArray[Any], compiled: CompileMode) -> NDArray[Any]:
    # Raw scores of a batch: the compiled forest when `compiled` and the batch size call for it.
    forest = model.compiled_forest(len(matrix), compiled)
    return model.raw(matrix) if forest is None else forest.raw(matrix)


def past_snapshots(scorable: pd.DataFrame, stamp: pd.Timestamp) -> tuple[pd.DataFrame, NDArray[Any]]:
    """The leads at the trend's past instants, those created by then: snapshots, and each one's position in (instant, lead) order.

    Returns:
        (`lead_id`, `as_of` rows: 7 days before, then 30 days before; for each row i * n + j,
        instant i and lead j of `scorable`'s n).
    """
    lead_ids = scorable["lead_id"].to_numpy()
    parts, positions = [], []
    for i, instant in enumerate(stamp - pd.Timedelta(days=d) for d in TREND_PAST_DAYS):
        existed = np.flatnonzero((scorable["created_at"] <= instant).to_numpy())
        parts.append(pd.DataFrame({"lead_id": lead_ids[existed], "as_of": instant}))
        positions.append(i * len(scorable) + existed)
    return pd.concat(parts, ignore_index=True), np.concatenate(positions)


def subscore_columns(
    model: ScoringModel, sums: tuple[NDArray[Any], NDArray[Any]] | None, n: int
) -> tuple[pd.arrays.IntegerArray, pd.arrays.IntegerArray, pd.Categorical]:
    """`ScoringModel.subscores` of many rows at once: fit and engagement (nullable 0-100) and the cell.

    Args:
        model: The loaded bundle.
        sums: The rows' fit and engagement log-odds sums (`_fit_engagement`); None: no sub-scores.
        n: Number of rows.
    """
    cells = ["A1", "A2", "A3", "B1", "B2", "B3", "C1", "C2", "C3"]
    scale = model.meta.subscores
    if scale is None or sums is None:
        missing = pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))
        return missing, missing.copy(), pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8), categories=cells)
    fit, engagement = sums
    none = np.zeros(n, dtype=bool)
    percentiles = [
        pd.arrays.IntegerArray(np.clip(np.searchsorted(q, v, side="right") - 1, 0, 100).astype(np.int64), none.copy())
        for q, v in ((scale.fit_quantiles, fit), (scale.engagement_quantiles, engagement))
    ]
    # Thirds counted from the top: A/1 = 0 cuts below the value missed, C/3 = 2.
    letter = 2 - (fit >= scale.fit_cuts[0]).astype(np.int8) - (fit >= scale.fit_cuts[1])
    digit = 2 - (engagement >= scale.engagement_cuts[0]).astype(np.int8) - (engagement >= scale.engagement_cuts[1])
    return percentiles[0], percentiles[1], pd.Categorical.from_codes(3 * letter + digit, categories=cells)


def strongest_reasons_up(model: ScoringModel, contributions: NDArray[Any], rows: FeatureRows, language: str = "en") -> list[str | None]:
    """Each row's strongest reason up, the label `model.reasons(..., top_k=1)` gives: `reasons_up`'s first rank."""
    return reasons_up(model, contributions, rows, language, top_k=1)[0]


def reasons_up(
    model: ScoringModel, contributions: NDArray[Any], rows: FeatureRows, language: str = "en", top_k: int = 1
) -> list[list[str | None]]:
    """Each row's `top_k` strongest reasons up, the labels `model.reasons(..., top_k)` gives, ranked for all rows at once.

    The drivers' log-odds are summed column by column in feature order, the order `reasons` adds
    them in, and ranked by the same stable sort, so ties go to the driver `reasons` picks (the
    last one seen) and the choice is the same to the last bit (`tests/test_treeshap.py`); only
    the reasons shown are phrased.

    Args:
        model: The loaded bundle.
        contributions: `model.contributions` of the rows (features then base value).
        rows: The rows' features, in the same order.
        language: "en" or "fr".
        top_k: How many reasons up per row (at least 1).

    Returns:
        One list per rank (the strongest first), each with one label per row; None where fewer
        drivers than that rank lift the score.

    Raises:
        ValueError: `top_k` below 1.
    """
    if top_k < 1:
        raise ValueError(f"top_k: at least 1 reason, got {top_k}")
    drivers = model.drivers  # first appearance order, as `reasons` ranks them
    per_driver = np.zeros((len(contributions), len(drivers)))
    for j, d in enumerate(model.driver_of_column.tolist()):
        per_driver[:, d] += contributions[:, j]
    n = len(per_driver)
    if top_k == 1:  # one rank: the last maximum, as the stable sort's last place, without sorting
        ranked = (len(drivers) - 1 - np.argmax(per_driver[:, ::-1], axis=1))[:, None]
    else:
        ranked = np.argsort(per_driver, axis=1, kind="stable")[:, ::-1][:, :top_k]
    lifts = np.take_along_axis(per_driver, ranked, axis=1) > 0
    labels = np.full((top_k, n), None, dtype=object)
    at_row, at_rank = np.nonzero(lifts)
    chosen = ranked[at_row, at_rank]
    attribute = np.asarray(model.driver_is_attribute, dtype=bool)[chosen]
    phrasings = model.phrasings(language) if len(chosen) else []
    # A behaviour driver's label reads several of the lead's counts and recencies: phrased row by row.
    for i, k, d in zip(at_row[~attribute].tolist(), at_rank[~attribute].tolist(), chosen[~attribute].tolist(), strict=True):
        labels[k, i] = phrasings[d](rows.row_view(i)).label
    # An attribute's depends on its value alone (`describe_attribute`): phrased once per distinct value of each driver.
    for d in np.unique(chosen[attribute]).tolist():
        name = drivers[d]
        picked = attribute & (chosen == d)
        values = (rows.categorical[name] if name in rows.categorical else rows.numeric[name])[at_row[picked]]
        codes, distinct = _distinct_values(values)
        phrased = np.array([phrasings[d]({name: value}).label for value in distinct], dtype=object)
        labels[at_rank[picked], at_row[picked]] = phrased[codes]
    return cast(list[list[str | None]], labels.tolist())


def _distinct_values(values: NDArray[Any]) -> tuple[NDArray[np.intp], list[object]]:
    """(codes, distinct): `values[i]` is `distinct[codes[i]]`, each value as `FeatureRows.row_view` gives it.

    Two values are one only when they are the same to the bit (numbers) or equal text (categories):
    -0.0 and 0.0, or missing values of different kinds (None, NaN), stay apart, as phrasing may
    tell them apart.
    """
    if values.dtype.kind == "f":
        bits, codes = np.unique(np.ascontiguousarray(values, dtype=np.float64).view(np.int64), return_inverse=True)
        return codes.ravel(), [float(x) for x in bits.view(np.float64)]
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct: list[object] = list(uniques)
    missing = np.flatnonzero(codes < 0)
    if missing.size:  # None, NaN...: factorize makes them one; each kind keeps its own code
        kinds: dict[str, int] = {}
        for i in missing.tolist():
            key = repr(values[i])
            if key not in kinds:
                kinds[key] = len(distinct)
                distinct.append(values[i])
            codes[i] = kinds[key]
    return codes, distinct
