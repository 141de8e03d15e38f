"""The feature specification: which attributes a lead has and how behaviour is summarised.

A `FeatureSpec` is configuration (it comes from `leadscore.yaml`) and travels inside every
model bundle, so serving rebuilds exactly the features the model was trained on.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

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
    PROPERTY_AGGREGATES,
    count_feature,
    property_feature,
    recency_feature,
    type_slug,
)

PropertyAggregate = Literal["sum", "max"]


class VocabularyRule(BaseModel):
    """How the interaction vocabulary is learned from the data (`features.learn_types`).

    Attributes:
        min_events: Events a type needs in the training part to get features of its own;
            rarer types are counted as other events.
        include: Types that get features whatever their count.
    """

    model_config = ConfigDict(extra="forbid")

    min_events: int = Field(default=30, ge=1)
    include: list[str] = Field(default_factory=list)


class TypeLabel(BaseModel):
    """Plain-language label of one interaction type in one language (`features.type_labels`).

    Only `title` is needed ("Sales calls"); the phrases default to "<title>: 1", "<title>: {n}"
    and "<title>: none".

    Attributes:
        title: The driver's title, e.g. "Sales calls".
        once: Did it once, e.g. "Had a sales call".
        many: Did it n times, with `{n}`, e.g. "Had {n} sales calls".
        never: Never did it, e.g. "Never had a sales call".
    """

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    once: str | None = None
    many: str | None = None
    never: str | None = None

    @field_validator("many")
    @classmethod
    def _has_n(cls, value: str | None) -> str | None:
        if value is not None and "{n}" not in value:
            raise ValueError(f"many: {value!r} needs {{n}} where the count goes")
        return value


class PropertyLabel(BaseModel):
    """Plain-language label of one event property in one language (`features.property_labels`).

    Only `title` is needed ("Pages viewed"); the phrases default to generated ones. A phrase
    gets the window ("in the last 7 days", "since the lead was created") after it.

    Attributes:
        title: The driver's title, e.g. "Pages viewed".
        sum: The sum, with `{x}` where the number goes, e.g. "{x} pages viewed".
        max: The largest value, with `{x}`, e.g. "Up to {x} pages in one session".
        never: No value at all, e.g. "No page viewed".
    """

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    sum: str | None = None
    max: str | None = None
    never: str | None = None

    @field_validator("sum", "max")
    @classmethod
    def _has_x(cls, value: str | None) -> str | None:
        if value is not None and "{x}" not in value:
            raise ValueError(f"{value!r} needs {{x}} where the number goes")
        return value


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
        events: False when the data has leads with time but no interaction at all: the
            behaviour block is then the lead's age at the snapshot alone.
        learn_types: Learn `interaction_types` from the training data (types seen often
            enough); None keeps `interaction_types` as given. The learned list is what the
            bundle stores.
        type_labels: Interaction type -> language ("en", "fr") -> its label, for types the
            project has no words for; without one, labels are generated from the type name.
        properties: Event property (a numeric column of an event table, e.g. "pages") -> its
            aggregates ("sum", "max"), each computed over every window and since creation
            (`features.vocabulary.property_feature`: `sum_pages_7d`, `max_pages_total`) from the
            events at or before the snapshot that carry a value. A sum over no value is 0, a
            max over none is missing.
        property_labels: Property -> language ("en", "fr") -> its label; without one, labels
            are generated from the property's name.
        never_seen_days: `days_since_<type>` of a type the lead has not shown by the snapshot.
            None leaves it missing. A number beyond any real recency (`NEVER_SEEN_DAYS`, 100
            years) orders "never" after every "last one d days ago", which a monotone
            constraint on the recency needs (`training.lightgbm.monotone_decreasing`): LightGBM
            does not order a missing value against numbers, so the first event of a type could
            lower the score. `leadscore.yaml` sets it when such a constraint is declared.
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
    events: bool = True
    learn_types: VocabularyRule | None = None
    type_labels: dict[str, dict[Literal["en", "fr"], TypeLabel]] = Field(default_factory=dict)
    properties: dict[str, list[PropertyAggregate]] = Field(default_factory=dict)
    property_labels: dict[str, dict[Literal["en", "fr"], PropertyLabel]] = Field(default_factory=dict)
    never_seen_days: float | None = Field(default=None, gt=0)

    @field_validator("properties")
    @classmethod
    def _properties_named_and_aggregated(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, aggregates in value.items():
            if type_slug(name) != name:
                raise ValueError(f"properties: {name!r} is not a snake_case name (e.g. {type_slug(name)!r})")
            if not aggregates or len(set(aggregates)) != len(aggregates):
                raise ValueError(f"properties.{name}: list each of {list(PROPERTY_AGGREGATES)} at most once, at least one")
        # One order whatever the config's: the bundle's feature order must not depend on it.
        return {name: [a for a in PROPERTY_AGGREGATES if a in value[name]] for name in sorted(value)}

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
        slugs: dict[str, str] = {}
        for event_type in self.interaction_types:
            slug = type_slug(event_type)
            if slug in slugs:
                raise ValueError(f"interaction_types {slugs[slug]!r} and {event_type!r} both give features named {slug!r}; map one with type_map")
            slugs[slug] = event_type
        named = set(self.properties) & (set(self.interaction_types) | set(self.categorical) | set(self.numeric))
        if named:
            raise ValueError(f"properties {sorted(named)} share a name with an interaction type or attribute; a driver has one name")
        derived = set(self.behaviour_features()) | {EMAIL_DOMAIN_KIND}
        clash = derived & (set(self.categorical) | set(self.numeric))
        if clash:
            raise ValueError(f"attribute columns clash with derived feature names: {sorted(clash)}")
        return self

    def behaviour_features(self) -> list[str]:
        """Names of the features computed from interactions, in model order (none when static)."""
        if not self.interactions:
            return []
        if not self.events:
            return [LEAD_AGE_DAYS]
        return list(_behaviour_names(tuple(self.interaction_types), tuple(self.windows_days))) + self.property_features()

    def property_features(self) -> list[str]:
        """Names of the event property features, in model order: per property, aggregate, then window."""
        if not self.interactions or not self.events:
            return []
        return list(_property_names(tuple((n, tuple(a)) for n, a in self.properties.items()), tuple(self.windows_days)))

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


@lru_cache(maxsize=32)
def _property_names(properties: tuple[tuple[str, tuple[str, ...]], ...], windows_days: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(
        property_feature(name, aggregate, window)
        for name, aggregates in properties
        for aggregate in aggregates
        for window in (*windows_days, None)
    )
