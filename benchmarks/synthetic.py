"""A fast, vectorised synthetic funnel for benchmarks at 1M leads.

`simulator.funnel` models a funnel carefully and costs about a millisecond per lead; the
benchmarks measure the pipeline, not the simulator's realism, so this generator trades
realism for speed: a latent fit (from the attributes) and a latent intent drive the number and
kind of interactions and the conversion probability, so a model has something to learn.

Output frames are in the validated shape of `features.contract.Dataset` (UTC timestamps,
interactions sorted by lead then time), so the feature build can start at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import Dataset, ValidationReport

SECONDS_PER_DAY = 86_400
START = pd.Timestamp("2024-01-01T00:00:00Z")
SPAN_DAYS = 540
EVENT_SPREAD_DAYS = 120  # interactions happen over the first months of a lead's life

# attribute -> levels (each with an effect on fit)
ATTRIBUTES: dict[str, dict[str, float]] = {
    "industry": {"software": 0.4, "financial_services": 0.3, "healthcare": 0.2, "manufacturing": 0.1,
                 "retail": -0.1, "education": -0.4, "public_sector": -0.3, "other": -0.2},
    "company_size": {"1-9": -0.6, "10-49": -0.1, "50-199": 0.3, "200-499": 0.4, "500-999": 0.3, "1000+": 0.0},
    "country": {"US": 0.1, "GB": 0.1, "FR": 0.0, "DE": 0.0, "IN": -0.2, "BR": -0.1, "CA": 0.1, "other": -0.1},
    "job_role": {"marketing": 0.4, "sales": 0.3, "it": 0.1, "finance": 0.0, "operations": 0.0, "hr": -0.2,
                 "student": -1.2, "other": -0.2},
    "seniority": {"intern": -0.8, "individual_contributor": -0.2, "manager": 0.2, "director": 0.4, "vp": 0.5,
                  "c_level": 0.3},
    "source": {"organic_search": 0.1, "paid_search": 0.0, "referral": 0.6, "webinar": 0.1, "event": 0.2,
               "partner": 0.4, "cold_outbound": -0.3, "social": -0.4},
    "marketing_consent": {"yes": 0.1, "no": -0.1},
}
EMAIL_DOMAINS: dict[str, float] = {"acme-corp.com": 0.3, "gmail.com": -0.2, "mailinator.com": -1.0}
# Interactions of intent-heavy types are more frequent for leads with high intent.
TYPE_INTENT: dict[str, float] = {
    "page_view": 0.0, "pricing_page_view": 0.8, "email_open": -0.2, "email_click": 0.2,
    "whitepaper_download": 0.3, "webinar_registration": 0.3, "webinar_attended": 0.5, "form_submit": 0.5,
    "demo_request": 1.2, "meeting_booked": 1.4, "unsubscribe": -1.0, "email_bounce": -0.8,
}
TYPE_BASE_SHARE: dict[str, float] = {
    "page_view": 0.35, "pricing_page_view": 0.06, "email_open": 0.25, "email_click": 0.08,
    "whitepaper_download": 0.04, "webinar_registration": 0.03, "webinar_attended": 0.02, "form_submit": 0.03,
    "demo_request": 0.01, "meeting_booked": 0.01, "unsubscribe": 0.01, "email_bounce": 0.01,
}


def _arrow_strings(values: pa.Array, index: np.ndarray | None = None) -> pd.Series:
    # Arrow-backed strings: 20M lead ids cost ~300 MB instead of ~1.5 GB of Python objects.
    taken = values if index is None else values.take(pa.array(index))
    return pd.Series(pd.array(taken, dtype=pd.StringDtype("pyarrow", na_value=np.nan)))


def synthetic_dataset(n_leads: int, events_per_lead: float = 20.0, seed: int = 0) -> Dataset:
    """Leads and interactions in the validated shape of the data contract.

    Args:
        n_leads: Number of leads, created uniformly over `SPAN_DAYS` days from `START`.
        events_per_lead: Mean number of interactions per lead.
        seed: Random seed: same seed, same data.

    Returns:
        A `Dataset` (nothing quarantined): leads with `lead_id`, `created_at`, `converted_at`,
        the attributes of `training.config.SIMULATOR_FEATURES` and `email`; interactions with
        `lead_id`, `occurred_at`, `type`, `channel`, sorted by lead then time.
    """
    rng = np.random.default_rng(seed)
    ids = pa.array(np.char.add("S-", np.char.zfill(np.arange(n_leads).astype(str), 7)))
    start_s = int(START.timestamp())
    created_s = np.sort(start_s + rng.integers(0, SPAN_DAYS * SECONDS_PER_DAY, n_leads))
    end_s = start_s + SPAN_DAYS * SECONDS_PER_DAY

    fit = np.zeros(n_leads)
    columns: dict[str, object] = {}
    for name, levels in ATTRIBUTES.items():
        code = rng.integers(0, len(levels), n_leads)
        fit += np.array(list(levels.values()))[code]
        columns[name] = _arrow_strings(pa.array(list(levels)), code)
    domain = rng.choice(len(EMAIL_DOMAINS), n_leads, p=[0.6, 0.35, 0.05])
    fit += np.array(list(EMAIL_DOMAINS.values()))[domain]
    columns["email"] = _arrow_strings(pa.array([f"x@{d}" for d in EMAIL_DOMAINS]), domain)
    employees = np.round(np.exp(rng.normal(4.5 + 0.3 * fit, 1.5)))
    intent = rng.normal(0.0, 1.0, n_leads)

    # Conversion: probability from fit and intent; time within the first months.
    p_convert = 1.0 / (1.0 + np.exp(-(-2.2 + 0.9 * fit + 0.9 * intent)))
    converts = rng.random(n_leads) < p_convert
    convert_s = created_s + rng.gamma(2.0, 20.0, n_leads) * SECONDS_PER_DAY
    converted = converts & (convert_s <= end_s)

    # Interactions: a Poisson count per lead, times spread after creation, types tilted by intent.
    n_events = rng.poisson(events_per_lead * np.exp(0.3 * intent - 0.045), n_leads)
    lead_of_event = np.repeat(np.arange(n_leads), n_events)
    n_total = lead_of_event.size
    offset_s = (rng.exponential(EVENT_SPREAD_DAYS / 3, n_total) * SECONDS_PER_DAY).astype(np.int64)
    event_s = np.minimum(created_s[lead_of_event] + offset_s, end_s)
    types = list(TYPE_BASE_SHARE)
    base = np.log(np.array([TYPE_BASE_SHARE[t] for t in types]))
    tilt = np.array([TYPE_INTENT[t] for t in types])
    # Three intent bands keep type sampling vectorised: one categorical draw per band.
    band = np.digitize(intent, [-0.5, 0.5])[lead_of_event]
    type_code = np.empty(n_total, dtype=np.int64)
    for b, level in enumerate((-1.0, 0.0, 1.0)):
        share = np.exp(base + tilt * level)
        in_band = band == b
        type_code[in_band] = rng.choice(len(types), int(in_band.sum()), p=share / share.sum())
    order = np.lexsort((event_s, lead_of_event))
    lead_of_event, event_s, type_code = lead_of_event[order], event_s[order], type_code[order]

    leads = pd.DataFrame(
        {
            "lead_id": _arrow_strings(ids),
            "created_at": pd.to_datetime(created_s, unit="s", utc=True),
            "converted_at": pd.to_datetime(np.where(converted, convert_s, np.nan), unit="s", utc=True),
            "email": columns.pop("email"),
            **columns,
            "employee_count": employees,
        }
    )
    type_names = pa.array(types)
    interactions = pd.DataFrame(
        {
            "lead_id": _arrow_strings(ids, lead_of_event),
            "occurred_at": pd.to_datetime(event_s, unit="s", utc=True),
            "type": _arrow_strings(type_names, type_code),
            "channel": _arrow_strings(pa.array(["web", "email", "event", "sales"]), np.minimum(type_code // 3, 3)),
        }
    )
    quarantine = pd.DataFrame(columns=["table", "rule", "lead_id"])
    return Dataset(leads=leads, interactions=interactions, quarantine=quarantine, report=ValidationReport())


def write_parquet(data: Dataset, directory: Path) -> Path:
    """Write leads.parquet and interactions.parquet (the data contract's files) to a folder."""
    directory.mkdir(parents=True, exist_ok=True)
    data.leads.to_parquet(directory / "leads.parquet", index=False)
    data.interactions.to_parquet(directory / "interactions.parquet", index=False)
    return directory


CACHE_DIR = Path(__file__).resolve().parents[1] / ".leadscore" / "bench-data"
_GENERATOR_VERSION = 1  # bump when the generator changes, so old cached files are not reused


def cached_parquet(n_leads: int, seed: int = 0, events_per_lead: float = 20.0) -> Path:
    """Folder with the synthetic data set as Parquet, generated once in a child process.

    The child keeps the generator's memory out of the process that will be measured.
    """
    import subprocess
    import sys

    directory = CACHE_DIR / f"v{_GENERATOR_VERSION}-{n_leads}-{seed}-{events_per_lead:g}"
    if not (directory / "interactions.parquet").exists():
        code = (
            "import sys; from pathlib import Path; from benchmarks.synthetic import synthetic_dataset, write_parquet; "
            "write_parquet(synthetic_dataset(int(sys.argv[1]), float(sys.argv[3]), int(sys.argv[2])), Path(sys.argv[4]))"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(n_leads), str(seed), str(events_per_lead), str(directory)],
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    return directory
