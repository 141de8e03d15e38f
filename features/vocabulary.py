"""Interaction vocabulary and the names of behavioural features.

A feature name is built here once and used everywhere (engine, grids, reasons, reports), so
that a rename cannot leave a second spelling behind.
"""

from __future__ import annotations

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


def count_feature(event_type: str, window_days: int | None) -> str:
    """Name of the count of `event_type` events in the last `window_days` (None: since creation)."""
    return f"n_{event_type}_total" if window_days is None else f"n_{event_type}_{window_days}d"


def recency_feature(event_type: str) -> str:
    """Name of the days since the last `event_type` event (NaN when there was none)."""
    return f"days_since_{event_type}"


ENGAGEMENT_DECAYED = "engagement_decayed"
ACTIVE_DAYS_30D = "active_days_30d"
ACTIVE_DAYS_TOTAL = "active_days_total"
EVENTS_TOTAL = "n_events_total"
OTHER_EVENTS_TOTAL = "n_other_events_total"
LEAD_AGE_DAYS = "lead_age_days"
