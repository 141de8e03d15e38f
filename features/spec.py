"""The feature specification: which attributes a lead has and how behaviour is summarised.

A `FeatureSpec` is configuration (it comes from `leadscore.yaml`) and travels inside every
model bundle, so serving rebuilds exactly the features the model was trained on.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.vocabulary import (
    ACTIVE_DAYS_30D,
    ACTIVE_DAYS_TOTAL,
    DEFAULT_HALFLIFE_DAYS,
    DEFAULT_WINDOWS_DAYS,
    EMAIL_DOMAIN_KIND,
    ENGAGEMENT_DECAYED,
    ENGAGEMENT_WEIGHTS,
    EVENTS_TOTAL,
    INTERACTION_TYPES,
    LEAD_AGE_DAYS,
    OTHER_EVENTS_TOTAL,
    count_feature,
    recency_feature,
)


class FeatureSpec(BaseModel):
    """What the feature pipeline computes for every (lead, as_of) snapshot.

    Attributes:
        categorical: Lead attribute columns used as categories (levels learned at fit time).
        numeric: Lead attribute columns used as numbers.
        email_column: Column holding the lead's email address, from which only the domain kind
            (corporate / free / disposable / invalid) is derived; the address itself is never a
            feature. None when the data has no email.
        interaction_types: The known interaction vocabulary; other types are kept and counted
            as `n_other_events_total`.
        windows_days: Look-back windows for event counts (a `_total` count since creation is
            always added).
        halflife_days: Half-life of the time-decayed engagement score.
        engagement_weights: Weight of each interaction type in the engagement score.
        interactions: False for a static export (one row per lead, no timestamps): the model
            then has no behaviour features, only the attribute columns.
    """

    model_config = ConfigDict(extra="forbid")

    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    email_column: str | None = "email"
    interaction_types: list[str] = Field(default_factory=lambda: list(INTERACTION_TYPES))
    windows_days: list[int] = Field(default_factory=lambda: list(DEFAULT_WINDOWS_DAYS))
    halflife_days: float = Field(default=DEFAULT_HALFLIFE_DAYS, gt=0)
    engagement_weights: dict[str, float] = Field(default_factory=lambda: dict(ENGAGEMENT_WEIGHTS))
    interactions: bool = True

    @field_validator("windows_days")
    @classmethod
    def _windows_positive_sorted(cls, value: list[int]) -> list[int]:
        if not value or any(w <= 0 for w in value):
            raise ValueError(f"windows_days must be positive whole days, got {value}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _names_do_not_clash(self) -> FeatureSpec:
        overlap = set(self.categorical) & set(self.numeric)
        if overlap:
            raise ValueError(f"columns declared both categorical and numeric: {sorted(overlap)}")
        if len(set(self.interaction_types)) != len(self.interaction_types):
            raise ValueError("interaction_types lists a type twice")
        derived = set(self.behaviour_features()) | {EMAIL_DOMAIN_KIND}
        clash = derived & (set(self.categorical) | set(self.numeric))
        if clash:
            raise ValueError(f"attribute columns clash with derived feature names: {sorted(clash)}")
        return self

    def behaviour_features(self) -> list[str]:
        """Names of the features computed from interactions, in model order (none when static)."""
        if not self.interactions:
            return []
        return list(_behaviour_names(tuple(self.interaction_types), tuple(self.windows_days)))

    def categorical_features(self) -> list[str]:
        """Categorical model inputs: declared attributes plus the derived email domain kind."""
        return list(self.categorical) + ([EMAIL_DOMAIN_KIND] if self.email_column else [])

    def feature_names(self) -> list[str]:
        """All model inputs, in the fixed order of the model matrix."""
        return self.categorical_features() + list(self.numeric) + self.behaviour_features()

    def attribute_columns(self) -> list[str]:
        """Lead columns the pipeline reads besides `lead_id` and timestamps."""
        return list(self.categorical) + list(self.numeric) + ([self.email_column] if self.email_column else [])


@lru_cache(maxsize=32)
def _behaviour_names(interaction_types: tuple[str, ...], windows_days: tuple[int, ...]) -> tuple[str, ...]:
    # Built once per vocabulary and windows: serving asks for the names on every request.
    names: list[str] = []
    for event_type in interaction_types:
        names.extend(count_feature(event_type, w) for w in windows_days)
        names.append(count_feature(event_type, None))
        names.append(recency_feature(event_type))
    names += [
        EVENTS_TOTAL,
        OTHER_EVENTS_TOTAL,
        ENGAGEMENT_DECAYED,
        ACTIVE_DAYS_30D,
        ACTIVE_DAYS_TOTAL,
        LEAD_AGE_DAYS,
    ]
    return tuple(names)
