"""Scoring leads with a bundle: the one path shared by the service and `leadscore score`.

`LeadIn` is the request schema (pydantic): the service validates bodies with it, the batch
scorer validates file rows with it. `score_leads` turns validated leads into responses.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.engine import lead_features
from leadscore.bundle import ScoringModel

AttributeValue = str | int | float | bool | None
MAX_INTERACTIONS_PER_LEAD = 5_000


def _to_utc(value: datetime) -> datetime:
    # A timestamp without a zone is read as UTC, as in the data contract.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class InteractionIn(BaseModel):
    """One interaction of a lead."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, Field(min_length=1, max_length=100, description="Interaction type, e.g. pricing_page_view")]
    occurred_at: Annotated[datetime, Field(description="ISO 8601; no zone means UTC")]
    channel: str | None = None

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _to_utc(value)


class LeadIn(BaseModel):
    """A lead as a CRM sends it."""

    model_config = ConfigDict(extra="forbid")

    lead_id: Annotated[str, Field(min_length=1, max_length=200)]
    created_at: Annotated[datetime, Field(description="ISO 8601; no zone means UTC")]
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    interactions: Annotated[list[InteractionIn], Field(max_length=MAX_INTERACTIONS_PER_LEAD)] = Field(
        default_factory=list
    )

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _to_utc(value)

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

    Interactions after `as_of` are ignored (and reported in `warnings`), as are none of the
    others: unknown types are counted, interactions before `created_at` are ignored with a
    warning, unseen category values score as missing with a warning.
    """
    now = datetime.now(UTC)
    as_of = _to_utc(as_of) if as_of is not None else now
    if as_of < lead.created_at:
        raise ValueError(f"as_of ({as_of.isoformat()}) is before lead.created_at ({lead.created_at.isoformat()})")
    warnings: list[str] = []
    spec = model.spec
    created_s = int(lead.created_at.timestamp())
    as_of_s = int(as_of.timestamp())
    times: list[int] = []
    types: list[str] = []
    future = early = 0
    for event in lead.interactions:
        t = int(event.occurred_at.timestamp())
        if t < created_s:
            early += 1
            continue
        if t > as_of_s:
            future += 1
        times.append(t)
        types.append(event.type)
    if early:
        warnings.append(f"interactions: {early} before created_at ignored")
    if future:
        warnings.append(f"interactions: {future} after as_of not seen by this score")
    unknown = sorted({t for t in types if t not in spec.interaction_types})
    if unknown:
        warnings.append(f"interactions: types outside the vocabulary counted as other: {unknown}")

    known_attrs = set(spec.attribute_columns())
    extra = sorted(set(lead.attributes) - known_attrs)
    if extra:
        warnings.append(f"attributes not used by this model: {extra}")
    missing = sorted(known_attrs - set(lead.attributes))
    if missing:
        warnings.append(f"attributes missing, scored as unknown: {missing}")

    rows = lead_features(created_s, lead.attributes, times, types, as_of_s, spec)
    for name, levels in model.meta.categorical_levels.items():
        value = rows.categorical[name][0]
        if value is not None and value not in model._codes[name]:
            warnings.append(f"attributes.{name}: value {value!r} unseen in training, scored as unknown")
    matrix = model.encode(rows)
    values = rows.row(0)
    if with_reasons:
        contrib = model.contributions(matrix)[0]
        raw = float(contrib.sum())
        up, down = model.reasons(contrib, values, top_k=top_k, language=language)
        reasons = {"up": [ReasonOut(**r.to_dict()) for r in up], "down": [ReasonOut(**r.to_dict()) for r in down]}
    else:
        raw = float(model.raw(matrix)[0])
        reasons = None
    probability = float(model.meta.calibration.apply(np.array([raw]))[0])
    points, fired = model.meta.grid.score_row(values)
    return ScoreOut(
        lead_id=lead.lead_id,
        as_of=as_of,
        probability=round(probability, 6),
        score=int(model.score_0_100(np.array([probability]))[0]),
        tier=model.tier(probability),  # type: ignore[arg-type]
        mql=model.is_mql(probability),
        reasons=reasons,
        point_grid=GridOut(points=points, mql=bool(model.meta.grid.is_mql(points)), rules_fired=fired),
        warnings=warnings,
        model_version=model.meta.model_version,
    )
