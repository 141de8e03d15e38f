"""Interaction vocabulary and the names of behavioural features.

A feature name is built here once and used everywhere (engine, grids, reasons, reports), so
that a rename cannot leave a second spelling behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

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
    """Name of the days since the last `event_type` event (NaN when there was none)."""
    return f"days_since_{type_slug(event_type)}"


def frequent_types(counts: Mapping[str, int], min_events: int, include: Sequence[str] = ()) -> list[str]:
    """The interaction vocabulary learned from the data: types seen at least `min_events` times.

    Args:
        counts: Interaction type -> number of events (of the training part).
        min_events: A type with fewer events is counted as "other".
        include: Types kept whatever their count (listed first, in their order).

    Returns:
        `include`, then the frequent types by decreasing count (ties by name).
    """
    frequent = sorted((t for t, n in counts.items() if n >= min_events and t not in include), key=lambda t: (-counts[t], t))
    return [*dict.fromkeys(include), *frequent]


ENGAGEMENT_DECAYED = "engagement_decayed"
ACTIVE_DAYS_30D = "active_days_30d"
ACTIVE_DAYS_TOTAL = "active_days_total"
EVENTS_TOTAL = "n_events_total"
OTHER_EVENTS_TOTAL = "n_other_events_total"
LEAD_AGE_DAYS = "lead_age_days"
