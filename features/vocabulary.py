"""Interaction vocabulary and the names of behavioural features.

A feature name is built here once and used everywhere (engine, grids, reasons, reports), so
that a rename cannot leave a second spelling behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TypeVar

INTERACTION_TYPES: tuple[str, ...] = (
    "page_view",
    "pricing_page_view",
    "email_open",
    "email_click",
    "whitepaper_download",
    "webinar_registration",
    "webinar_attended",
    "form_submit",
    "demo_request",
    "meeting_booked",
    "unsubscribe",
    "email_bounce",
)

# Weights of each type in the time-decayed engagement score. Negative signals weigh nothing
# here: they have their own count and recency features.
ENGAGEMENT_WEIGHTS: dict[str, float] = {
    "page_view": 1.0,
    "pricing_page_view": 3.0,
    "email_open": 0.5,
    "email_click": 1.5,
    "whitepaper_download": 3.0,
    "webinar_registration": 2.0,
    "webinar_attended": 4.0,
    "form_submit": 3.0,
    "demo_request": 8.0,
    "meeting_booked": 8.0,
    "unsubscribe": 0.0,
    "email_bounce": 0.0,
}

DEFAULT_WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90)
DEFAULT_HALFLIFE_DAYS: float = 14.0
# `days_since_<type>` of a type never shown, when the spec orders "never" after every real
# recency (`FeatureSpec.never_seen_days`): 100 years.
NEVER_SEEN_DAYS: float = 36_500.0
RECENCY_PREFIX = "days_since_"

EMAIL_DOMAIN_KIND = "email_domain_kind"
EMAIL_DOMAIN_KINDS: tuple[str, ...] = ("corporate", "free", "disposable", "invalid")


@lru_cache(maxsize=4096)
def type_slug(event_type: str) -> str:
    """The part of a feature name an interaction type gives: snake_case ASCII.

    Built-in types are their own slug; a type learned from an export as it comes ("EMAIL",
    "Web Session") becomes `email`, `web_session`.
    """
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", event_type)
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", spaced).strip("_").lower()
    return slug or "type"


def type_words(event_type: str) -> str:
    """An interaction type in words, for generated labels: "Web Session" -> "web session"."""
    return type_slug(event_type).replace("_", " ")


def count_feature(event_type: str, window_days: int | None) -> str:
    """Name of the count of `event_type` events in the last `window_days` (None: since creation)."""
    slug = type_slug(event_type)
    return f"n_{slug}_total" if window_days is None else f"n_{slug}_{window_days}d"


def recency_feature(event_type: str) -> str:
    """Name of the days since the last `event_type` event (none: missing, or `FeatureSpec.never_seen_days`)."""
    return f"{RECENCY_PREFIX}{type_slug(event_type)}"


# A type split by a categorical column (`split_by`) is "<type>__<value slug>"; a split the
# vocabulary does not list counts as its type (`split_base`).
SPLIT_SEPARATOR = "__"


def split_type(event_type: str, value: str) -> str:
    """The type of an event of `event_type` whose split column reads `value`: "email_click__newsletter"."""
    return f"{event_type}{SPLIT_SEPARATOR}{type_slug(value)}"


def split_base(event_type: str) -> str | None:
    """The type a split type splits ("email_click__newsletter" -> "email_click"); None for a plain type."""
    base, separator, _ = event_type.rpartition(SPLIT_SEPARATOR)
    return base if separator and base else None


def split_value_words(event_type: str) -> str | None:
    """The split value of a split type, in words ("email_click__sales_team" -> "sales team")."""
    base, separator, value = event_type.rpartition(SPLIT_SEPARATOR)
    return value.replace("_", " ") if separator and base and value else None


def frequent_types(counts: Mapping[str, int], min_events: int, include: Sequence[str] = ()) -> list[str]:
    """The interaction vocabulary learned from the data: types seen at least `min_events` times.

    A split type ("email_click__newsletter", see `split_type`) seen fewer times folds into its
    type: its events count towards the type's own total, as the engine counts them.

    Args:
        counts: Interaction type -> number of events (of the training part).
        min_events: A type with fewer events is counted as "other" (a rare split as its type).
        include: Types kept whatever their count (listed first, in their order).

    Returns:
        `include`, then the frequent types by decreasing count (ties by name).
    """
    folded: dict[str, int] = {}
    for event_type, n in counts.items():
        base = split_base(event_type)
        if base is not None and n < min_events and event_type not in include:
            folded[base] = folded.get(base, 0) + n
        else:
            folded[event_type] = folded.get(event_type, 0) + n
    frequent = sorted((t for t, n in folded.items() if n >= min_events and t not in include), key=lambda t: (-folded[t], t))
    return [*dict.fromkeys(include), *frequent]


PROPERTY_AGGREGATES: tuple[str, ...] = ("sum", "max")


def property_feature(name: str, aggregate: str, window_days: int | None) -> str:
    """Name of an event property aggregated over a window: `sum_pages_7d`, `max_amount_total`.

    Args:
        name: The property's name (`data.interactions[].properties` key), snake_case.
        aggregate: "sum" or "max".
        window_days: The look-back window; None: since the lead's creation.
    """
    return f"{aggregate}_{name}_total" if window_days is None else f"{aggregate}_{name}_{window_days}d"


ENGAGEMENT_DECAYED = "engagement_decayed"
ACTIVE_DAYS_30D = "active_days_30d"
ACTIVE_DAYS_TOTAL = "active_days_total"
EVENTS_TOTAL = "n_events_total"
OTHER_EVENTS_TOTAL = "n_other_events_total"
LEAD_AGE_DAYS = "lead_age_days"


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def remembered(memo: dict[_K, _V], keys: Iterable[_K], read: Callable[[_K], _V], limit: int) -> dict[_K, _V]:
    """`read(key)` of each of `keys`, from `memo` when it holds the key; the reading of a new key kept there while it holds fewer than `limit`.

    A served model reads the same few interaction types on every request, and a client sending
    made-up ones cannot grow the memory: past the limit a new key is read every time.
    """
    out: dict[_K, _V] = {}
    for key in keys:
        if key in memo:
            out[key] = memo[key]
            continue
        out[key] = value = read(key)
        if len(memo) < limit:
            memo[key] = value
    return out
