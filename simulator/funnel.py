"""A seeded B2B funnel: leads, their interactions, and the hazard that converts them.

Every lead gets a latent *fit* (firmographics plus a small hidden part), a latent *intent*
curve over its life (a first bump after creation, sometimes a later re-engagement, collapsing
at a latent *churn* time) and a conversion hazard that depends on fit and intent only:

    s(t)   = intent(t) / (intent(t) + HAZARD_SATURATION)           diminishing returns
    log λ  = log HAZARD_SCALE + fit(t) * (1 + HAZARD_FIT_X_INTENT * s(t))
             + log(s(t) + HAZARD_FLOOR) [+ log CHURN_HAZARD_FACTOR after churn]

The hazard is piecewise constant on whole days since creation (its value at the middle of each
day), so `true_conversion_probability` integrates exactly the hazard the sampler inverted.
Interactions are Poisson processes on the same daily grid whose rates follow intent and fit, and
each lead enters through an action (demo request, form, whitepaper, webinar registration, or a
sales import) that says much about its intent, so the latent state can largely be read back from
attributes and behaviour up to any as_of. What stays hidden on purpose is small: a bit of fit,
a bit of the intent amplitude, and the future (a later re-engagement, the churn time).

`drift` (0..1) changes relationships along the calendar: the source mix moves towards paid and
social, healthcare's effect on fit turns negative while education's turns positive, and webinar
registrations say less about intent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from tqdm import tqdm

from features.vocabulary import INTERACTION_TYPES

SECONDS_PER_DAY = 86_400
ISO_UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

UNKNOWN_INTERACTION_TYPE = "chat_started"
"""A type outside the vocabulary that real exports carry; the pipeline keeps and counts it."""

LEAD_COLUMNS: tuple[str, ...] = (
    "lead_id",
    "created_at",
    "converted_at",
    "email",
    "industry",
    "company_size",
    "employee_count",
    "country",
    "job_role",
    "seniority",
    "source",
    "marketing_consent",
)
INTERACTION_COLUMNS: tuple[str, ...] = ("lead_id", "occurred_at", "type", "channel")
LATENT_COLUMNS: tuple[str, ...] = (
    "fit",
    "fit_drift_per_day",
    "fit_hidden",
    "intent_amp",
    "intent_peak_days",
    "intent_decay_days",
    "reengage_at_days",
    "reengage_amp",
    "reengage_decay_days",
    "churn_at_days",
)
TRUTH_COLUMNS: tuple[str, ...] = ("lead_id", "created_at", *LATENT_COLUMNS, "email_kind")

# --- Hazard (shared by the sampler and the oracle) -------------------------------------------
HAZARD_SCALE = 0.0031  # per day, for fit 0 and full intent
HAZARD_SATURATION = 0.5  # intent at which the intent term is half saturated
HAZARD_FLOOR = 0.03  # conversions without intent (sales-led), relative to saturated intent
HAZARD_FIT_X_INTENT = 0.9  # fit counts more when intent is high
CHURN_INTENT_FACTOR = 0.03  # intent left after churn
CHURN_HAZARD_FACTOR = 0.6  # extra drop of the hazard after churn
INTENT_RISE_DAYS = 1.5  # e-folding time of intent before a bump's peak

# --- Intent and churn draws --------------------------------------------------------------------
INTENT_LOG_AMP_BASE = -0.8
INTENT_FIT_LOADING = 0.35  # good fits are also keener
INTENT_LOG_AMP_HIDDEN_SD = 0.25  # part of the amplitude only behaviour reveals
INTENT_PEAK_MEAN_DAYS = 1.5
INTENT_DECAY_MEDIAN_DAYS = 16.0
REENGAGE_SHARE = 0.08  # leads that come back later with a second bump
REENGAGE_GAP_DAYS = 20.0  # a re-engagement starts at least this long after the first peak...
REENGAGE_WAIT_MEAN_DAYS = 120.0  # ...plus an exponential wait of this mean
REENGAGE_LOG_AMP = (-0.4, 0.4)  # its amplitude relative to the first bump: log-normal (mean, sd)
REENGAGE_LOG_DECAY_DAYS = (float(np.log(12.0)), 0.4)  # its decay time: log-normal (mean, sd)
CHURN_MIN_DAYS = 5.0
CHURN_MEAN_DAYS = 400.0  # for fit 0; the exponential wait after CHURN_MIN_DAYS
CHURN_FIT_LOADING = 0.5  # good fits stay longer: the mean wait is CHURN_MEAN_DAYS * exp(0.5 fit)

# --- Attributes: level -> (share, effect on fit) ---------------------------------------------
INDUSTRIES: dict[str, tuple[float, float]] = {
    "software": (0.22, 0.45),
    "financial_services": (0.12, 0.30),
    "healthcare": (0.10, 0.30),
    "manufacturing": (0.14, 0.15),
    "retail": (0.10, -0.10),
    "education": (0.09, -0.50),
    "public_sector": (0.07, -0.35),
    "other": (0.16, -0.20),
}
# Change of an industry's fit effect at the end of the span under drift=1 (linear in time).
INDUSTRY_DRIFT: dict[str, float] = {"healthcare": -1.1, "education": 0.9}

COMPANY_SIZES: dict[str, tuple[float, float]] = {
    "1-9": (0.18, -0.70),
    "10-49": (0.24, -0.15),
    "50-199": (0.22, 0.30),
    "200-499": (0.14, 0.40),
    "500-999": (0.09, 0.30),
    "1000+": (0.13, 0.05),
}
_SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "1-9": (1, 9),
    "10-49": (10, 49),
    "50-199": (50, 199),
    "200-499": (200, 499),
    "500-999": (500, 999),
    "1000+": (1000, 250_000),
}
# Seniority matters more where one person can sign and the purchase is still a project.
_SENIORITY_WEIGHT_BY_SIZE: dict[str, float] = {
    "1-9": 0.5,
    "10-49": 0.8,
    "50-199": 1.6,
    "200-499": 1.6,
    "500-999": 1.3,
    "1000+": 0.6,
}

SENIORITIES: dict[str, tuple[float, float]] = {
    "intern": (0.06, -0.90),
    "individual_contributor": (0.40, -0.20),
    "manager": (0.26, 0.20),
    "director": (0.14, 0.45),
    "vp": (0.08, 0.55),
    "c_level": (0.06, 0.35),
}
JOB_ROLES: dict[str, tuple[float, float]] = {
    "marketing": (0.22, 0.45),
    "sales": (0.14, 0.30),
    "it": (0.18, 0.10),
    "finance": (0.09, 0.00),
    "operations": (0.12, 0.00),
    "hr": (0.07, -0.25),
    "student": (0.06, -1.30),
    "other": (0.12, -0.25),
}
# source -> (share at start, share at end under drift=1, effect on fit, effect on log intent)
SOURCES: dict[str, tuple[float, float, float, float]] = {
    "organic_search": (0.22, 0.18, 0.10, 0.20),
    "paid_search": (0.14, 0.24, 0.00, 0.10),
    "referral": (0.08, 0.06, 0.60, 0.40),
    "webinar": (0.12, 0.07, 0.10, 0.10),
    "event": (0.10, 0.04, 0.20, 0.00),
    "partner": (0.07, 0.06, 0.40, 0.20),
    "cold_outbound": (0.14, 0.12, -0.30, -0.60),
    "social": (0.13, 0.23, -0.40, -0.30),
}
# How a lead entered the CRM: the interaction at its created_at ("import" leaves none). The
# entry action says a lot about intent, as it does in real funnels.
ENTRY_INTENT_EFFECT: dict[str, float] = {
    "demo_request": 0.9,
    "form_submit": 0.2,
    "whitepaper_download": -0.3,
    "webinar_registration": 0.0,
    "import": -0.7,
}
ENTRY_ACTIONS_BY_SOURCE: dict[str, dict[str, float]] = {
    "organic_search": {"demo_request": 0.15, "form_submit": 0.35, "whitepaper_download": 0.50},
    "paid_search": {"demo_request": 0.15, "form_submit": 0.30, "whitepaper_download": 0.55},
    "referral": {"demo_request": 0.35, "form_submit": 0.45, "whitepaper_download": 0.20},
    "webinar": {"webinar_registration": 1.0},
    "event": {"form_submit": 1.0},
    "partner": {"demo_request": 0.30, "form_submit": 0.50, "whitepaper_download": 0.20},
    "cold_outbound": {"import": 1.0},
    "social": {"demo_request": 0.05, "form_submit": 0.25, "whitepaper_download": 0.70},
}
EMAIL_KINDS: dict[str, tuple[float, float]] = {
    "corporate": (0.62, 0.30),
    "free": (0.25, -0.15),
    "disposable": (0.05, -1.00),
    "invalid": (0.08, -0.60),
}
# country -> (share, top-level domain of its companies, effect on fit)
COUNTRIES: dict[str, tuple[float, str, float]] = {
    "US": (0.34, "com", 0.10),
    "GB": (0.14, "co.uk", 0.05),
    "DE": (0.12, "de", 0.00),
    "FR": (0.10, "fr", -0.05),
    "CA": (0.09, "ca", 0.05),
    "AU": (0.08, "com.au", 0.00),
    "ES": (0.07, "es", -0.10),
    "NL": (0.06, "nl", 0.00),
}
FIT_HIDDEN_SD = 0.1
MARKETING_CONSENT_SHARE = 0.55
MARKETING_CONSENT_EFFECT = 0.15

# --- Behaviour ---------------------------------------------------------------------------------
_CHANNEL_BY_TYPE: dict[str, str] = {
    "page_view": "web",
    "pricing_page_view": "web",
    "email_open": "email",
    "email_click": "email",
    "whitepaper_download": "web",
    "webinar_registration": "web",
    "webinar_attended": "event",
    "form_submit": "web",
    "demo_request": "web",
    "meeting_booked": "sales",
    "unsubscribe": "email",
    "email_bounce": "email",
    UNKNOWN_INTERACTION_TYPE: "web",
}
_CHANNELS: tuple[str, ...] = ("web", "email", "event", "sales")
_TYPES: tuple[str, ...] = (*INTERACTION_TYPES, UNKNOWN_INTERACTION_TYPE)
_TYPE_CODE: dict[str, int] = {t: i for i, t in enumerate(_TYPES)}
_CHANNEL_CODE: dict[str, int] = {c: i for i, c in enumerate(_CHANNELS)}

UNSUBSCRIBE_AT_CHURN = 0.85
EMAIL_SENDS_PER_DAY_CONSENT = 1 / 7
EMAIL_SENDS_PER_DAY_NO_CONSENT = 1 / 30
DISPOSABLE_MAILBOX_DAYS = 10.0  # a throw-away inbox stops existing after this
INVALID_BOUNCE_DAYS = 21.0  # an invalid address is suppressed after this
WEBINAR_EVERY_DAYS = 14
_CHUNK_LEADS = 2_000  # leads simulated together on the daily grid (part of the seeded stream)

_FIRST_NAMES: tuple[str, ...] = tuple(
    ["james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "david", "sarah", "thomas", "emma", "lucas", "chloe", "jean", "camille", "pierre", "lea", "hans", "anna", "lukas", "sophie", "jan", "lotte", "daan", "ana", "carlos", "lucia", "javier", "olivia", "liam", "noah", "ava", "ethan", "mia", "oliver", "isla", "jack", "grace", "raj", "priya", "wei", "mei", "kenji", "yuki", "omar", "fatima", "ivan", "elena", "marco"]
)
_LAST_NAMES: tuple[str, ...] = tuple(
    ["smith", "johnson", "williams", "brown", "jones", "miller", "davis", "wilson", "taylor", "moreau", "dubois", "lefevre", "martin", "bernard", "muller", "schmidt", "schneider", "fischer", "weber", "dejong", "jansen", "devries", "bakker", "garcia", "martinez", "lopez", "sanchez", "perez", "campbell", "stewart", "murphy", "kelly", "walsh", "obrien", "nguyen", "tremblay", "roy", "gagnon", "patel", "singh", "chen", "wang", "tanaka", "sato", "kowalski", "novak", "rossi", "ferrari", "andersen", "larsen"]
)
_COMPANY_WORDS: tuple[str, ...] = tuple(
    ["northwind", "bluepeak", "redwood", "silverline", "ironbridge", "brightpath", "clearwater", "greenfield", "stonegate", "oakridge", "summit", "harbor", "pioneer", "vertex", "meridian", "atlas", "nimbus", "orbit", "quantum", "falcon", "cedar", "lakeside", "everest", "horizon", "keystone", "lumen", "nova", "polaris", "sterling", "tidewater"]
)
_COMPANY_SUFFIXES: dict[str, tuple[str, ...]] = {
    "software": ("labs", "software", "systems", "cloud", "tech"),
    "financial_services": ("capital", "finance", "partners", "bank", "insurance"),
    "healthcare": ("health", "care", "medical", "clinic", "pharma"),
    "manufacturing": ("industries", "manufacturing", "works", "logistics", "engineering"),
    "retail": ("retail", "stores", "shop", "brands", "market"),
    "education": ("academy", "learning", "college", "school", "institute"),
    "public_sector": ("council", "agency", "authority", "services", "office"),
    "other": ("group", "co", "consulting", "ventures", "media"),
}
_FREE_DOMAINS = (
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "gmx.de",
    "web.de",
    "orange.fr",
    "yahoo.co.uk",
)
_DISPOSABLE_DOMAINS = (
    "mailinator.com",
    "guerrillamail.com",
    "10minutemail.com",
    "yopmail.com",
    "trashmail.com",
    "temp-mail.org",
)


@dataclass(frozen=True)
class Simulation:
    """One simulated CRM export plus the latent truth behind it.

    Attributes:
        leads: `LEAD_COLUMNS`; `created_at`/`converted_at` as datetime64[ns, UTC] (NaT when not
            converted by `export_at`), sorted by `lead_id` (which follows `created_at`).
        interactions: `INTERACTION_COLUMNS`; `occurred_at` as datetime64[ns, UTC], sorted by
            lead_id then occurred_at.
        truth: `TRUTH_COLUMNS`: lead_id, created_at and the latents of the hazard (never a
            feature; only for `true_conversion_probability`).
        export_at: The time the export was taken (UTC); nothing in it is later.
        meta: seed, n_leads, start, span_days, export_at, drift, description.
    """

    leads: pd.DataFrame
    interactions: pd.DataFrame
    truth: pd.DataFrame
    export_at: pd.Timestamp
    meta: dict


class _Latents(NamedTuple):
    """Latent columns of a set of leads as column vectors (n, 1), ready to broadcast on a grid."""

    fit: np.ndarray
    fit_drift_per_day: np.ndarray
    intent_amp: np.ndarray
    intent_peak_days: np.ndarray
    intent_decay_days: np.ndarray
    reengage_at_days: np.ndarray
    reengage_amp: np.ndarray
    reengage_decay_days: np.ndarray
    churn_at_days: np.ndarray


def _latents(truth: pd.DataFrame, rows: np.ndarray | slice = slice(None)) -> _Latents:
    missing = [c for c in LATENT_COLUMNS if c not in truth.columns]
    if missing:
        raise ValueError(f"truth: missing latent columns {missing}; found {list(truth.columns)}")
    columns = {}
    for name in _Latents._fields:
        values = truth[name].to_numpy(dtype=np.float64)[rows]
        columns[name] = values[:, None]
    # A lead that never re-engages (NaN in truth) gets a bump of zero height at infinity.
    no_bump = np.isnan(columns["reengage_at_days"])
    columns["reengage_at_days"] = np.where(no_bump, np.inf, columns["reengage_at_days"])
    columns["reengage_amp"] = np.where(no_bump, 0.0, columns["reengage_amp"])
    columns["reengage_decay_days"] = np.where(no_bump, 1.0, columns["reengage_decay_days"])
    return _Latents(**columns)


def _bump(tau: np.ndarray, peak: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """Exponential rise until `peak`, exponential decay after it; 1 at the peak."""
    gap = tau - peak
    return np.exp(np.where(gap < 0, gap / INTENT_RISE_DAYS, -gap / decay))


def _intent(lat: _Latents, tau: np.ndarray) -> np.ndarray:
    """Intent at `tau` days after creation (broadcast against the (n, 1) latents)."""
    first = lat.intent_amp * _bump(tau, lat.intent_peak_days, lat.intent_decay_days)
    later = lat.reengage_amp * _bump(tau, lat.reengage_at_days, lat.reengage_decay_days)
    return (first + later) * np.where(tau >= lat.churn_at_days, CHURN_INTENT_FACTOR, 1.0)


def _saturated(intent: np.ndarray) -> np.ndarray:
    return intent / (intent + HAZARD_SATURATION)


def _hazard(lat: _Latents, tau: np.ndarray) -> np.ndarray:
    """Conversion hazard per day at `tau` days after creation (a function of the latents only)."""
    s = _saturated(_intent(lat, tau))
    fit = lat.fit + lat.fit_drift_per_day * tau
    churned = np.where(tau >= lat.churn_at_days, CHURN_HAZARD_FACTOR, 1.0)
    return (
        HAZARD_SCALE * np.exp(fit * (1.0 + HAZARD_FIT_X_INTENT * s)) * (s + HAZARD_FLOOR) * churned
    )


def _cell_hazard(lat: _Latents, cells: np.ndarray) -> np.ndarray:
    """Hazard of whole day `cells` since creation: the value at the middle of each day."""
    return _hazard(lat, cells + 0.5)


# --- Leads --------------------------------------------------------------------------------------


def _draw_levels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of `probs` (n, k), rows summing to 1; returns level indices."""
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((probs.shape[0], 1))  # a column: one uniform per row
    return np.minimum((u > cumulative).sum(axis=1), probs.shape[1] - 1)


def _tile(shares: list[float], n: int) -> np.ndarray:
    return np.tile(np.asarray(shares, dtype=np.float64), (n, 1))


def _draw_created_seconds(
    rng: np.random.Generator, n: int, start_s: int, span_days: int
) -> np.ndarray:
    """Creation times: weekdays busier than weekends, office hours busier than nights."""
    days = np.arange(span_days)
    weekday = ((start_s // SECONDS_PER_DAY + days + 3) % 7).astype(int)  # 1970-01-01 was a Thursday
    weight = np.where(weekday < 5, 1.0, np.where(weekday == 5, 0.35, 0.30))
    day = rng.choice(span_days, size=n, p=weight / weight.sum())
    office = rng.random(n) < 0.8
    hour = np.where(office, rng.normal(14.0, 3.5, n), rng.uniform(0.0, 24.0, n)) % 24.0
    seconds = start_s + day * SECONDS_PER_DAY + (hour * 3600).astype(np.int64)
    return np.sort(seconds)


def _draw_attributes(
    rng: np.random.Generator, calendar_frac: np.ndarray, drift: float
) -> dict[str, np.ndarray]:
    """Firmographics of each lead (level indices into the attribute tables)."""
    n = calendar_frac.size
    w = drift * calendar_frac[:, None]
    early = np.array([v[0] for v in SOURCES.values()])
    late = np.array([v[1] for v in SOURCES.values()])
    source = _draw_levels(rng, (1 - w) * early + w * late)

    industry = _draw_levels(rng, _tile([v[0] for v in INDUSTRIES.values()], n))
    size = _draw_levels(rng, _tile([v[0] for v in COMPANY_SIZES.values()], n))
    country = _draw_levels(rng, _tile([v[0] for v in COUNTRIES.values()], n))
    role = _draw_levels(rng, _tile([v[0] for v in JOB_ROLES.values()], n))

    seniority_p = _tile([v[0] for v in SENIORITIES.values()], n)
    level = {name: i for i, name in enumerate(SENIORITIES)}
    small = size == list(COMPANY_SIZES).index("1-9")
    seniority_p[small, level["c_level"]] *= 5.0  # founders fill in forms themselves
    student = role == list(JOB_ROLES).index("student")
    seniority_p[student] = 0.0
    seniority_p[student, level["intern"]] = 0.8
    seniority_p[student, level["individual_contributor"]] = 0.2
    seniority = _draw_levels(rng, seniority_p)

    email_p = _tile([v[0] for v in EMAIL_KINDS.values()], n)
    kind = {name: i for i, name in enumerate(EMAIL_KINDS)}
    email_p[small, kind["free"]] *= 2.5
    email_p[student, kind["corporate"]] *= 0.05
    email_p[student, kind["free"]] *= 4.0
    social = source == list(SOURCES).index("social")
    email_p[social, kind["disposable"]] *= 2.0
    email_kind = _draw_levels(rng, email_p)

    actions = list(ENTRY_INTENT_EFFECT)
    entry_p = np.array(
        [[by_source.get(a, 0.0) for a in actions] for by_source in ENTRY_ACTIONS_BY_SOURCE.values()]
    )
    entry_action = _draw_levels(rng, entry_p[source])

    consent = rng.random(n) < MARKETING_CONSENT_SHARE
    return {
        "entry_action": entry_action,
        "industry": industry,
        "company_size": size,
        "country": country,
        "job_role": role,
        "seniority": seniority,
        "source": source,
        "email_kind": email_kind,
        "marketing_consent": consent,
    }


def _employee_counts(rng: np.random.Generator, size: np.ndarray) -> np.ndarray:
    """Head count inside each lead's band: log-uniform, Pareto-like above 1000."""
    bounds = np.array(list(_SIZE_BOUNDS.values()), dtype=np.float64)
    lo, hi = bounds[size, 0], bounds[size, 1]
    u = rng.random(size.size)
    count = np.floor(lo * ((hi + 1) / lo) ** u)
    large = size == list(COMPANY_SIZES).index("1000+")
    pareto = np.floor(1000.0 * rng.random(size.size) ** (-1 / 1.1))
    count = np.where(large, np.minimum(pareto, hi), count)
    return np.clip(count, lo, hi).astype(np.int64)


def _effects(table: dict, index: np.ndarray, position: int) -> np.ndarray:
    return np.array([v[position] for v in table.values()], dtype=np.float64)[index]


def _fit_at_creation(
    rng: np.random.Generator,
    attrs: dict[str, np.ndarray],
    calendar_frac: np.ndarray,
    drift: float,
    span_days: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit at creation, its change per day under drift, and its hidden part."""
    seniority = (
        _effects(SENIORITIES, attrs["seniority"], 1)
        * np.array(list(_SENIORITY_WEIGHT_BY_SIZE.values()))[attrs["company_size"]]
    )
    industry_drift = np.array([INDUSTRY_DRIFT.get(name, 0.0) for name in INDUSTRIES])
    drift_total = drift * industry_drift[attrs["industry"]]
    hidden = rng.normal(0.0, FIT_HIDDEN_SD, calendar_frac.size)
    fit = (
        _effects(INDUSTRIES, attrs["industry"], 1)
        + drift_total * calendar_frac
        + _effects(COMPANY_SIZES, attrs["company_size"], 1)
        + seniority
        + _effects(JOB_ROLES, attrs["job_role"], 1)
        + _effects(SOURCES, attrs["source"], 2)
        + _effects(EMAIL_KINDS, attrs["email_kind"], 1)
        + _effects(COUNTRIES, attrs["country"], 2)
        + MARKETING_CONSENT_EFFECT * attrs["marketing_consent"]
        + hidden
    )
    return fit, drift_total / span_days, hidden


def _draw_intent_and_churn(
    rng: np.random.Generator, attrs: dict[str, np.ndarray], fit: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-lead intent curve (first bump, optional re-engagement) and churn time, in days."""
    n = fit.size
    entry = np.array(list(ENTRY_INTENT_EFFECT.values()))[attrs["entry_action"]]
    # Most of the amplitude is visible at creation (source, entry action, fit): what the
    # oracle knows and a model cannot learn must stay small.
    log_amp = (
        INTENT_LOG_AMP_BASE
        + _effects(SOURCES, attrs["source"], 3)
        + entry
        + INTENT_FIT_LOADING * fit
        + rng.normal(0.0, INTENT_LOG_AMP_HIDDEN_SD, n)
    )
    amp = np.exp(log_amp)
    peak = rng.exponential(INTENT_PEAK_MEAN_DAYS, n)
    decay = np.exp(rng.normal(np.log(INTENT_DECAY_MEDIAN_DAYS), 0.25, n))
    reengages = rng.random(n) < REENGAGE_SHARE
    reengage_at = np.where(reengages, peak + REENGAGE_GAP_DAYS + rng.exponential(REENGAGE_WAIT_MEAN_DAYS, n), np.nan)
    reengage_amp = np.where(reengages, amp * np.exp(rng.normal(*REENGAGE_LOG_AMP, n)), np.nan)
    reengage_decay = np.where(reengages, np.exp(rng.normal(*REENGAGE_LOG_DECAY_DAYS, n)), np.nan)
    # Poor fits lose interest sooner.
    churn_at = CHURN_MIN_DAYS + rng.exponential(CHURN_MEAN_DAYS * np.exp(CHURN_FIT_LOADING * fit), n)
    return {
        "intent_amp": amp,
        "intent_peak_days": peak,
        "intent_decay_days": decay,
        "reengage_at_days": reengage_at,
        "reengage_amp": reengage_amp,
        "reengage_decay_days": reengage_decay,
        "churn_at_days": churn_at,
    }


def _emails(rng: np.random.Generator, attrs: dict[str, np.ndarray]) -> np.ndarray:
    """Fake addresses whose domain kind is the lead's `email_kind`."""
    n = attrs["email_kind"].size
    first = np.array(_FIRST_NAMES)[rng.integers(len(_FIRST_NAMES), size=n)]
    last = np.array(_LAST_NAMES)[rng.integers(len(_LAST_NAMES), size=n)]
    style = rng.integers(4, size=n)
    number = rng.integers(1, 99, size=n)
    word = np.array(_COMPANY_WORDS)[rng.integers(len(_COMPANY_WORDS), size=n)]
    suffix_pick = rng.integers(5, size=n)
    free = np.array(_FREE_DOMAINS)[rng.integers(len(_FREE_DOMAINS), size=n)]
    disposable = np.array(_DISPOSABLE_DOMAINS)[rng.integers(len(_DISPOSABLE_DOMAINS), size=n)]
    invalid_style = rng.integers(5, size=n)
    kinds = list(EMAIL_KINDS)
    industries = list(INDUSTRIES)
    tlds = [v[1] for v in COUNTRIES.values()]
    out = np.empty(n, dtype=object)
    for i in range(n):
        f, s = first[i], last[i]
        kind = kinds[attrs["email_kind"][i]]
        if kind == "corporate":
            local = (f"{f[0]}.{s}", f"{f}.{s}", f"{f}{s[0]}", f"{f}")[style[i]]
            suffix = _COMPANY_SUFFIXES[industries[attrs["industry"][i]]][suffix_pick[i]]
            out[i] = f"{local}@{word[i]}-{suffix}.{tlds[attrs['country'][i]]}"
        elif kind == "free":
            local = (f"{f}.{s[0]}", f"{f}{s}{number[i]}", f"{f}.{s}", f"{s}.{f}")[style[i]]
            out[i] = f"{local}@{free[i]}"
        elif kind == "disposable":
            local = (f"x{number[i]}", f"{f[0]}{number[i]}", "test", f"{f}{number[i]}")[style[i]]
            out[i] = f"{local}@{disposable[i]}"
        else:
            invalid = (f"{f}.{s}@", "n/a", f"{f}.{s}.gmail.com", "none", f"{f}@{s}")
            out[i] = invalid[invalid_style[i]]
    return out


# --- Behaviour and conversion on the daily grid -------------------------------------------------


class _Events(NamedTuple):
    lead: np.ndarray  # global lead index
    offset_s: np.ndarray  # seconds after the lead's creation
    type_code: np.ndarray
    channel_code: np.ndarray


def _events(
    lead: np.ndarray, offset_s: np.ndarray, event_type: str, channel: str | None = None
) -> _Events:
    n = lead.size
    channel = channel or _CHANNEL_BY_TYPE[event_type]
    return _Events(
        lead.astype(np.int64),
        offset_s.astype(np.int64),
        np.full(n, _TYPE_CODE[event_type], dtype=np.int64),
        np.full(n, _CHANNEL_CODE[channel], dtype=np.int64),
    )


def _poisson_on_grid(rng: np.random.Generator, rate: np.ndarray, event_type: str) -> _Events:
    """Events of a Poisson process with a daily piecewise-constant `rate` (leads x days)."""
    counts = rng.poisson(rate)
    row, day = np.nonzero(counts)
    repeat = counts[row, day]
    row, day = np.repeat(row, repeat), np.repeat(day, repeat)
    offset = ((day + rng.random(day.size)) * SECONDS_PER_DAY).astype(np.int64)
    return _events(row, offset, event_type)


def _simulate_chunk(
    rng: np.random.Generator,
    lat: _Latents,
    attrs: dict[str, np.ndarray],
    created_s: np.ndarray,
    export_s: int,
    start_s: int,
    span_days: int,
    drift: float,
    webinar_s: np.ndarray,
) -> tuple[np.ndarray, list[_Events]]:
    """Conversion times and events of a chunk of leads (row indices local to the chunk).

    Returns:
        Conversion time as seconds after creation (-1 when not converted before export), and
        the chunk's events (not yet clipped at conversion/export).
    """
    m = created_s.size
    life_days = (export_s - created_s) / SECONDS_PER_DAY
    n_days = int(np.ceil(life_days.max()))
    cells = np.arange(n_days, dtype=np.float64)[None, :]
    tau = cells + 0.5
    intent = _intent(lat, tau)
    s = _saturated(intent)

    # Conversion: invert the cumulative hazard at an Exp(1) draw, linearly within a day.
    hazard = _cell_hazard(lat, cells)
    cumulative = np.cumsum(hazard, axis=1)
    target = rng.exponential(size=m)
    day = (cumulative < target[:, None]).sum(axis=1)
    inside = day < n_days
    day_c = np.minimum(day, n_days - 1)
    before = np.where(day_c > 0, cumulative[np.arange(m), day_c - 1], 0.0)
    conv_days = day_c + (target - before) / hazard[np.arange(m), day_c]
    conv_s = np.maximum(1, np.floor(conv_days * SECONDS_PER_DAY)).astype(np.int64)
    converted = inside & (created_s + conv_s < export_s)
    conv_s = np.where(converted, conv_s, -1)

    end_days = np.where(converted, conv_s / SECONDS_PER_DAY, life_days)[:, None]
    alive = cells < end_days
    fit = lat.fit + lat.fit_drift_per_day * tau
    churned = tau >= lat.churn_at_days
    rows = np.arange(m)
    parts: list[_Events] = []

    web_rate = 0.015 + 1.5 * intent
    parts.append(_poisson_on_grid(rng, web_rate * alive, "page_view"))
    parts.append(_poisson_on_grid(rng, 0.6 * intent * s * alive, "pricing_page_view"))
    parts.append(_poisson_on_grid(rng, 0.05 * intent * alive, "whitepaper_download"))
    parts.append(_poisson_on_grid(rng, 0.04 * intent * alive, "form_submit"))
    parts.append(_poisson_on_grid(rng, 0.08 * intent * s**2 * alive, "demo_request"))
    parts.append(
        _poisson_on_grid(rng, 0.05 * intent * s**2 * np.exp(0.4 * fit) * alive, "meeting_booked")
    )
    parts.append(_poisson_on_grid(rng, 0.004 * web_rate * alive, UNKNOWN_INTERACTION_TYPE))

    # Email: sends depend on consent; a throw-away inbox expires, an invalid address bounces
    # until it is suppressed, and an unsubscribe stops everything.
    kinds = list(EMAIL_KINDS)
    kind = attrs["email_kind"][:, None]
    unsubscribes = rng.random(m) < UNSUBSCRIBE_AT_CHURN
    sends = np.where(
        attrs["marketing_consent"][:, None],
        EMAIL_SENDS_PER_DAY_CONSENT,
        EMAIL_SENDS_PER_DAY_NO_CONSENT,
    ) * (alive & ~(churned & unsubscribes[:, None]))
    deliverable = (kind == kinds.index("corporate")) | (kind == kinds.index("free"))
    deliverable = deliverable | (
        (kind == kinds.index("disposable")) & (tau < DISPOSABLE_MAILBOX_DAYS)
    )
    opens = sends * deliverable * (0.10 + 0.5 * s)
    parts.append(_poisson_on_grid(rng, opens, "email_open"))
    parts.append(_poisson_on_grid(rng, opens * (0.08 + 0.4 * s), "email_click"))
    invalid = kind == kinds.index("invalid")
    parts.append(
        _poisson_on_grid(rng, sends * invalid * (tau < INVALID_BOUNCE_DAYS), "email_bounce")
    )
    welcome = rows[attrs["email_kind"] == kinds.index("invalid")]
    parts.append(_events(welcome, rng.uniform(60, SECONDS_PER_DAY, welcome.size), "email_bounce"))
    expired = rows[attrs["email_kind"] == kinds.index("disposable")]
    first_send_after = DISPOSABLE_MAILBOX_DAYS + rng.exponential(7.0, expired.size)
    parts.append(_events(expired, first_send_after * SECONDS_PER_DAY, "email_bounce"))

    churn_rows = rows[unsubscribes]
    churn_offset = lat.churn_at_days[unsubscribes, 0] * SECONDS_PER_DAY
    parts.append(_events(churn_rows, churn_offset, "unsubscribe"))

    parts.extend(_creation_events(attrs, rows))
    parts.extend(_webinar_events(rng, lat, attrs, created_s, start_s, span_days, drift, webinar_s))
    return conv_s, parts


def _creation_events(attrs: dict[str, np.ndarray], rows: np.ndarray) -> list[_Events]:
    """The entry action of each lead, at its created_at.

    Webinar registrations are emitted with the webinars (see `_webinar_events`); imports leave
    no interaction; a form at a trade-show booth comes through the event channel.
    """
    actions = list(ENTRY_INTENT_EFFECT)
    action = attrs["entry_action"]
    at_event = attrs["source"] == list(SOURCES).index("event")
    parts = []
    for name in ("demo_request", "form_submit", "whitepaper_download"):
        chosen = action == actions.index(name)
        for on_site, channel in ((~at_event, None), (at_event, "event")):
            picked = rows[chosen & on_site]
            parts.append(_events(picked, np.zeros(picked.size), name, channel))
    return parts


def _webinar_events(
    rng: np.random.Generator,
    lat: _Latents,
    attrs: dict[str, np.ndarray],
    created_s: np.ndarray,
    start_s: int,
    span_days: int,
    drift: float,
    webinar_s: np.ndarray,
) -> list[_Events]:
    """Registrations (a few days ahead) and attendance for the fortnightly webinars.

    Under drift, registering says less about intent as time goes by.
    """
    m = created_s.size
    webinar_days = (webinar_s[None, :] - created_s[:, None]) / SECONDS_PER_DAY
    reg_days = webinar_days - rng.uniform(1.0, 10.0, webinar_days.shape)
    # A webinar lead registered for the first upcoming webinar at its creation.
    first_upcoming = np.argmax(webinar_days > 0.5, axis=1)
    from_webinar = attrs["entry_action"] == list(ENTRY_INTENT_EFFECT).index("webinar_registration")
    forced = np.zeros(webinar_days.shape, dtype=bool)
    forced[np.arange(m)[from_webinar], first_upcoming[from_webinar]] = True
    reg_days = np.where(forced, 0.0, reg_days)

    calendar_frac = np.clip(
        (created_s[:, None] + reg_days * SECONDS_PER_DAY - start_s) / (span_days * SECONDS_PER_DAY),
        0.0,
        1.0,
    )
    base = 0.01 * (1.0 + 3.0 * drift * calendar_frac)
    slope = 0.35 * (1.0 - 0.8 * drift * calendar_frac)
    p_register = 1.0 - np.exp(-(base + slope * _intent(lat, np.maximum(reg_days, 0.0))))
    registered = forced | ((reg_days > 0) & (rng.random(webinar_days.shape) < p_register))
    s_live = _saturated(_intent(lat, np.maximum(webinar_days, 0.0)))
    attended = registered & (rng.random(webinar_days.shape) < 0.35 + 0.45 * s_live)

    reg_row, reg_col = np.nonzero(registered)
    att_row, att_col = np.nonzero(attended)
    return [
        _events(reg_row, reg_days[reg_row, reg_col] * SECONDS_PER_DAY, "webinar_registration"),
        _events(
            att_row,
            (webinar_s[att_col] - created_s[att_row]) + rng.integers(0, 600, att_row.size),
            "webinar_attended",
        ),
    ]


# --- Public API -----------------------------------------------------------------------------------


def _parse_start(start: str) -> pd.Timestamp:
    stamp = pd.Timestamp(start)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _utc(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(seconds, unit="s", utc=True)).astype("datetime64[ns, UTC]")


def simulate(
    n_leads: int,
    seed: int,
    start: str = "2024-01-01",
    span_days: int = 540,
    drift: float = 0.0,
    show_progress: bool = False,
) -> Simulation:
    """Simulate a CRM export of `n_leads` leads created over `span_days` from `start`.

    Args:
        n_leads: Number of leads (at least 1).
        seed: Seed of the one `np.random.default_rng` everything is drawn from.
        start: First day of lead creation (ISO date or timestamp; UTC when no zone is given).
        span_days: Days over which leads are created; the export is taken at start + span_days.
        drift: 0 (stationary) to 1 (strong drift of relationships along the span).
        show_progress: Show a tqdm bar over chunks of leads.

    Returns:
        The `Simulation`: leads, interactions, truth, export time and meta.

    Raises:
        ValueError: n_leads < 1, span_days < 1 or drift outside [0, 1].
    """
    if n_leads < 1:
        raise ValueError(f"simulate: n_leads must be at least 1, got {n_leads}")
    if span_days < 1:
        raise ValueError(f"simulate: span_days must be at least 1, got {span_days}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"simulate: drift must be within [0, 1], got {drift}")
    rng = np.random.default_rng(seed)
    start_at = _parse_start(start)
    export_at = start_at + pd.Timedelta(days=span_days)
    start_s = int(start_at.timestamp())
    export_s = int(export_at.timestamp())

    created_s = _draw_created_seconds(rng, n_leads, start_s, span_days)
    calendar_frac = (created_s - start_s) / (span_days * SECONDS_PER_DAY)
    attrs = _draw_attributes(rng, calendar_frac, drift)
    fit, fit_drift_per_day, hidden = _fit_at_creation(rng, attrs, calendar_frac, drift, span_days)
    intent = _draw_intent_and_churn(rng, attrs, fit)
    lead_ids = np.array([f"L-{i:06d}" for i in range(1, n_leads + 1)], dtype=object)
    truth = pd.DataFrame(
        {
            "lead_id": lead_ids,
            "created_at": _utc(created_s),
            "fit": fit,
            "fit_drift_per_day": fit_drift_per_day,
            "fit_hidden": hidden,
            **intent,
            "email_kind": np.array(list(EMAIL_KINDS))[attrs["email_kind"]],
        }
    )

    first_webinar = (
        start_s + ((1 - (start_s // SECONDS_PER_DAY + 3)) % 7) * SECONDS_PER_DAY + 16 * 3600
    )
    webinar_s = np.arange(
        first_webinar, export_s + 60 * SECONDS_PER_DAY, WEBINAR_EVERY_DAYS * SECONDS_PER_DAY
    )
    conv_s = np.empty(n_leads, dtype=np.int64)
    collected: list[_Events] = []
    chunks = range(0, n_leads, _CHUNK_LEADS)
    for lo in tqdm(chunks, desc="simulating leads", unit="chunk", disable=not show_progress):
        hi = min(lo + _CHUNK_LEADS, n_leads)
        chunk_attrs = {k: v[lo:hi] for k, v in attrs.items()}
        chunk_conv, parts = _simulate_chunk(
            rng,
            _latents(truth, slice(lo, hi)),
            chunk_attrs,
            created_s[lo:hi],
            export_s,
            start_s,
            span_days,
            drift,
            webinar_s,
        )
        conv_s[lo:hi] = chunk_conv
        collected.extend(p._replace(lead=p.lead + lo) for p in parts)

    converted = conv_s >= 0
    leads = pd.DataFrame(
        {
            "lead_id": lead_ids,
            "created_at": truth["created_at"],
            "converted_at": _utc(np.where(converted, created_s + conv_s, 0)).where(converted),
            "email": _emails(rng, attrs),
            "industry": np.array(list(INDUSTRIES))[attrs["industry"]],
            "company_size": np.array(list(COMPANY_SIZES))[attrs["company_size"]],
            "employee_count": _employee_counts(rng, attrs["company_size"]),
            "country": np.array(list(COUNTRIES))[attrs["country"]],
            "job_role": np.array(list(JOB_ROLES))[attrs["job_role"]],
            "seniority": np.array(list(SENIORITIES))[attrs["seniority"]],
            "source": np.array(list(SOURCES))[attrs["source"]],
            "marketing_consent": np.where(attrs["marketing_consent"], "yes", "no"),
        }
    )
    interactions = _assemble_interactions(collected, lead_ids, created_s, conv_s, export_s)
    meta = {
        "seed": seed,
        "n_leads": n_leads,
        "start": start_at.strftime(ISO_UTC_FORMAT),
        "span_days": span_days,
        "export_at": export_at.strftime(ISO_UTC_FORMAT),
        "drift": drift,
        "description": (
            "Simulated B2B funnel (simulator.funnel): leads with firmographics, interactions "
            "driven by a latent intent curve, conversions sampled from a hazard of fit and intent. "
            "truth.csv holds the latents; it is never a feature."
        ),
    }
    return Simulation(
        leads=leads, interactions=interactions, truth=truth, export_at=export_at, meta=meta
    )


def _assemble_interactions(
    parts: list[_Events],
    lead_ids: np.ndarray,
    created_s: np.ndarray,
    conv_s: np.ndarray,
    export_s: int,
) -> pd.DataFrame:
    """Keep events from creation until conversion (exclusive) or export; sort; name them."""
    lead = np.concatenate([p.lead for p in parts])
    offset = np.concatenate([p.offset_s for p in parts])
    type_code = np.concatenate([p.type_code for p in parts])
    channel_code = np.concatenate([p.channel_code for p in parts])
    end_s = np.where(conv_s >= 0, created_s + conv_s, export_s)
    at = created_s[lead] + offset
    keep = (offset >= 0) & (at < end_s[lead])
    lead, at, type_code, channel_code = lead[keep], at[keep], type_code[keep], channel_code[keep]
    order = np.lexsort((type_code, at, lead))
    lead, at, type_code, channel_code = (
        lead[order],
        at[order],
        type_code[order],
        channel_code[order],
    )
    return pd.DataFrame(
        {
            "lead_id": lead_ids[lead],
            "occurred_at": _utc(at),
            "type": np.array(_TYPES, dtype=object)[type_code],
            "channel": np.array(_CHANNELS, dtype=object)[channel_code],
        }
    )


def _iso(values: pd.Series) -> np.ndarray:
    text = np.datetime_as_string(values.to_numpy(dtype="datetime64[s]"), unit="s")
    return np.where(values.isna().to_numpy(), "", np.char.add(text.astype(str), "Z"))


def write_simulation(sim: Simulation, out_dir: Path) -> None:
    """Write leads.csv, interactions.csv, truth.csv and meta.json into `out_dir`.

    Timestamps are ISO-8601 UTC with a trailing Z; `converted_at` is empty for leads not
    converted by the export. Same simulation, same bytes.

    Args:
        sim: The simulation to write.
        out_dir: Target folder (created if missing).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    leads = sim.leads.assign(
        created_at=_iso(sim.leads["created_at"]), converted_at=_iso(sim.leads["converted_at"])
    )
    leads.to_csv(out_dir / "leads.csv", index=False, columns=list(LEAD_COLUMNS))
    interactions = sim.interactions.assign(occurred_at=_iso(sim.interactions["occurred_at"]))
    interactions.to_csv(
        out_dir / "interactions.csv", index=False, columns=list(INTERACTION_COLUMNS)
    )
    truth = sim.truth.assign(created_at=_iso(sim.truth["created_at"]))
    truth.to_csv(out_dir / "truth.csv", index=False, columns=list(TRUTH_COLUMNS))
    (out_dir / "meta.json").write_text(json.dumps(sim.meta, indent=2) + "\n", encoding="utf-8")


def read_truth(path: Path) -> pd.DataFrame:
    """Read a truth.csv written by `write_simulation`.

    Args:
        path: The truth.csv file.

    Returns:
        `TRUTH_COLUMNS` with `created_at` as datetime64[ns, UTC] and latents as float64.

    Raises:
        ValueError: A truth column is missing.
    """
    truth = pd.read_csv(path, dtype={"lead_id": str, "email_kind": str})
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise ValueError(f"{path}: missing truth columns {missing}; found {list(truth.columns)}")
    truth["created_at"] = pd.to_datetime(truth["created_at"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    for column in LATENT_COLUMNS:
        truth[column] = truth[column].astype(np.float64)
    return truth


_ORACLE_BLOCK = 50_000  # snapshots per block of the (snapshots x days) hazard grid


def true_conversion_probability(
    truth: pd.DataFrame, lead_ids: ArrayLike, as_of: ArrayLike, horizon_days: float
) -> np.ndarray:
    """P(convert in (as_of, as_of + horizon] | not converted at as_of), from the latent hazard.

    Integrates exactly the piecewise-constant daily hazard the simulator sampled from, so over
    many snapshots the mean of this equals the observed conversion rate.

    Args:
        truth: `lead_id`, `created_at` and the `LATENT_COLUMNS` (e.g. `Simulation.truth` or
            `read_truth`).
        lead_ids: Lead of each snapshot.
        as_of: Snapshot time of each snapshot (timestamps; UTC when naive), or one for all.
        horizon_days: Window length in days (> 0).

    Returns:
        float64 array of probabilities, one per snapshot.

    Raises:
        ValueError: horizon_days <= 0, an unknown lead_id, or an as_of before its lead's creation.
    """
    rows, _stamps, start = _snapshot_rows(truth, lead_ids, as_of, horizon_days, "true_conversion_probability")
    n_cells = int(np.ceil(horizon_days)) + 1
    out = np.empty(rows.size, dtype=np.float64)
    for lo in range(0, rows.size, _ORACLE_BLOCK):
        hi = min(lo + _ORACLE_BLOCK, rows.size)
        a = start[lo:hi, None]
        b = a + horizon_days
        cells = np.floor(a) + np.arange(n_cells)[None, :]
        overlap = np.clip(np.minimum(cells + 1.0, b) - np.maximum(cells, a), 0.0, None)
        hazard = _cell_hazard(_latents(truth, rows[lo:hi]), cells)
        out[lo:hi] = -np.expm1(-(hazard * overlap).sum(axis=1))
    return out


def _snapshot_rows(
    truth: pd.DataFrame, lead_ids: ArrayLike, as_of: ArrayLike, horizon_days: float, caller: str
) -> tuple[np.ndarray, pd.DatetimeIndex, np.ndarray]:
    """Each snapshot's truth row, its as_of (one given for all is repeated) and its age in days.

    Raises:
        ValueError: horizon_days <= 0, an unknown lead_id, as many as_of as lead_ids but one, or
            an as_of before its lead's creation; the message starts with `caller`.
    """
    if not horizon_days > 0:
        raise ValueError(f"{caller}: horizon_days must be > 0, got {horizon_days}")
    ids = np.asarray(lead_ids, dtype=object).ravel()
    rows = pd.Index(truth["lead_id"]).get_indexer(ids)
    if (rows < 0).any():
        unknown = pd.unique(ids[rows < 0])
        raise ValueError(f"{caller}: {unknown.size} lead_id(s) not in truth (e.g. {', '.join(map(str, unknown[:3]))})")
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(as_of).ravel(), utc=True))
    if stamps.size == 1 and ids.size != 1:
        stamps = stamps.repeat(ids.size)
    if stamps.size != ids.size:
        raise ValueError(f"{caller}: {ids.size} lead_ids but {stamps.size} as_of values")
    created = pd.DatetimeIndex(truth["created_at"]).as_unit("ns").asi8[rows]
    start = (stamps.as_unit("ns").asi8 - created) / (SECONDS_PER_DAY * 1e9)
    early = start < 0
    if early.any():
        raise ValueError(
            f"{caller}: {int(early.sum())} snapshot(s) before their lead's "
            f"created_at (e.g. {', '.join(map(str, pd.unique(ids[early])[:3]))})"
        )
    return rows, stamps, start


def present_conversion_probability(
    truth: pd.DataFrame,
    lead_ids: ArrayLike,
    as_of: ArrayLike,
    horizon_days: float,
    draws: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """P(convert within the horizon) for an oracle that knows the present but not the future.

    `true_conversion_probability` knows every latent, among them two the export cannot show at
    `as_of` because they have not happened yet: whether and when a lead comes back with a second
    bump of intent, and when it churns. This oracle knows every latent of the present (fit, the
    first bump, a re-engagement or a churn that has already begun) and draws the rest from the
    simulator's own distributions, given that it has not happened by `as_of` (the waits are
    exponential, so a wait not over yet starts afresh): the mean of `draws` such futures. What
    separates it from the full oracle is out of reach of any model; what separates a model from
    it is what the features leave.

    Args:
        truth, lead_ids, as_of, horizon_days: As `true_conversion_probability`.
        draws: Futures drawn per snapshot.
        seed: Seed of the draws.

    Returns:
        float64 array of probabilities, one per snapshot.
    """
    rows, stamps, age = _snapshot_rows(truth, lead_ids, as_of, horizon_days, "present_conversion_probability")
    # One truth row per snapshot: each is conditioned on its own as_of.
    snap = truth.iloc[rows].reset_index(drop=True)
    snap["lead_id"] = np.arange(len(snap)).astype(str)
    peak = snap["intent_peak_days"].to_numpy()
    first_start = peak + REENGAGE_GAP_DAYS
    # A re-engagement or a churn at or before as_of is part of the present: kept as it is.
    reengaged = snap["reengage_at_days"].to_numpy() <= age  # False for NaN (never)
    churned = snap["churn_at_days"].to_numpy() <= age
    # P(a lead re-engages later | it has not by as_of), by Bayes on the share and the wait.
    not_yet = np.exp(-np.maximum(age - first_start, 0.0) / REENGAGE_WAIT_MEAN_DAYS)
    p_later = REENGAGE_SHARE * not_yet / (REENGAGE_SHARE * not_yet + 1.0 - REENGAGE_SHARE)
    churn_mean = CHURN_MEAN_DAYS * np.exp(CHURN_FIT_LOADING * snap["fit"].to_numpy())
    amp = snap["intent_amp"].to_numpy()
    rng = np.random.default_rng(seed)
    n = len(snap)
    total = np.zeros(n)
    for _ in range(draws):
        future = snap.copy()
        later = rng.random(n) < p_later
        at = np.maximum(age, first_start) + rng.exponential(REENGAGE_WAIT_MEAN_DAYS, n)
        future["reengage_at_days"] = np.where(reengaged, snap["reengage_at_days"], np.where(later, at, np.nan))
        future["reengage_amp"] = np.where(
            reengaged, snap["reengage_amp"], np.where(later, amp * np.exp(rng.normal(*REENGAGE_LOG_AMP, n)), np.nan)
        )
        future["reengage_decay_days"] = np.where(
            reengaged, snap["reengage_decay_days"], np.where(later, np.exp(rng.normal(*REENGAGE_LOG_DECAY_DAYS, n)), np.nan)
        )
        future["churn_at_days"] = np.where(
            churned, snap["churn_at_days"], np.maximum(age, CHURN_MIN_DAYS) + rng.exponential(churn_mean, n)
        )
        total += true_conversion_probability(future, future["lead_id"].to_numpy(), stamps, horizon_days)
    return total / draws
