"""Account snapshots and their point-in-time features: a buying group seen at `as_of`.

B2B buyers are buying groups: several contacts (leads) of one company, sharing an
`account_id`. An account snapshot `(account_id, as_of)` sees only the contacts created at or
before `as_of` and only their events at or before `as_of`; everything else of the account
(a contact added later, a later event) is invisible to it.

The account features are built in two steps so that this module stays free of any model:

1. `account_contacts` lists, per account snapshot, the contacts known at its time (one row per
   (snapshot, contact)); the caller scores each such row with a lead model at the snapshot's
   `as_of` (the lead model's probability and raw log-odds).
2. `account_features` aggregates the contacts' lead scores, buying-group roles, seniority and
   events into one row per snapshot (`ACCOUNT_FEATURES`).

A contact's buying-group role comes from a `buying_role` column when the leads have one, else
from `job_role` and `seniority` (`buying_role`), else it is unknown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.engine import FeatureRows, _category_values, _numeric_column, to_epoch_seconds

SECONDS_PER_DAY = 86_400
ACCOUNT_ID = "account_id"
BUYING_ROLE = "buying_role"

BUYING_ROLES: tuple[str, ...] = ("decision_maker", "champion", "technical", "user")
UNKNOWN_ROLE = "unknown"
_DECISION_SENIORITIES = frozenset({"vp", "c_level"})
_CHAMPION_SENIORITIES = frozenset({"manager", "director"})
_TECHNICAL_ROLES = frozenset({"it"})
# Seniority levels in order; a level outside this list counts as unknown (NaN rank).
SENIORITY_RANKS: dict[str, int] = {
    "intern": 0, "individual_contributor": 1, "manager": 2, "director": 3, "vp": 4, "c_level": 5,
}  # fmt: skip
SENIOR_RANK = SENIORITY_RANKS["director"]
ENGAGED_WINDOWS_DAYS: tuple[int, ...] = (7, 30)
ACCOUNT_ATTRIBUTE_PREFIX = "account_"
# An attribute is the company's when its contacts agree on it in this share of the accounts.
ACCOUNT_LEVEL_AGREEMENT = 0.95

ACCOUNT_FEATURES: tuple[str, ...] = (
    "n_contacts",
    "n_roles_covered",
    *(f"has_{role}" for role in BUYING_ROLES),
    "n_senior_contacts",
    "max_seniority_rank",
    "n_contacts_converted",
    "p_max",
    "p_mean",
    "p_sum",
    "p_second",
    "p_noisy_or",
    "raw_max",
    "raw_mean",
    *(f"p_max_{role}" for role in BUYING_ROLES),
    *(f"n_engaged_{w}d" for w in ENGAGED_WINDOWS_DAYS),
    *(f"n_roles_engaged_{w}d" for w in ENGAGED_WINDOWS_DAYS),
    *(f"n_events_{w}d" for w in ENGAGED_WINDOWS_DAYS),
    "n_events_total",
    *(f"n_events_30d_{role}" for role in BUYING_ROLES),
    *(f"days_since_last_event_{role}" for role in BUYING_ROLES),
    "p_max_engaged_7d",
    "n_event_types_30d",
    "n_event_types_total",
    "days_since_last_event",
    "days_since_first_contact",
    "days_since_last_contact",
)


def buying_role(job_role: object, seniority: object) -> str:
    """A contact's role in the buying group, from its job role and seniority.

    VPs and C-levels decide; IT people are the technical evaluators; managers and directors
    outside IT champion the purchase; everyone else uses the product.

    Args:
        job_role: The lead's job role (e.g. "it", "marketing"); None when unknown.
        seniority: The lead's seniority (e.g. "vp", "manager"); None when unknown.

    Returns:
        One of `BUYING_ROLES`, or `UNKNOWN_ROLE` when both inputs are missing.
    """
    if job_role is None and seniority is None:
        return UNKNOWN_ROLE
    if seniority in _DECISION_SENIORITIES:
        return "decision_maker"
    if job_role in _TECHNICAL_ROLES:
        return "technical"
    if seniority in _CHAMPION_SENIORITIES:
        return "champion"
    return "user"


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else str(value)


def contact_roles(leads: pd.DataFrame) -> np.ndarray:
    """Buying-group role of each lead (see the module docstring for where it comes from).

    Args:
        leads: Leads; optional columns `buying_role`, `job_role`, `seniority`.

    Returns:
        object array of role names, one per lead, in `leads` order.
    """
    if BUYING_ROLE in leads.columns:
        given = [_text(v) for v in leads[BUYING_ROLE].tolist()]
        return np.array([v if v in BUYING_ROLES else UNKNOWN_ROLE for v in given], dtype=object)
    n = len(leads)
    jobs = [_text(v) for v in leads["job_role"].tolist()] if "job_role" in leads.columns else [None] * n
    levels = [_text(v) for v in leads["seniority"].tolist()] if "seniority" in leads.columns else [None] * n
    return np.array([buying_role(j, s) for j, s in zip(jobs, levels, strict=True)], dtype=object)


def account_level_attributes(leads: pd.DataFrame, columns: list[str]) -> list[str]:
    """The attribute columns that describe the company, not the person: its contacts agree on them.

    Args:
        leads: `account_id` and the `columns`.
        columns: Candidate attribute columns.

    Returns:
        The columns on which the contacts of at least `ACCOUNT_LEVEL_AGREEMENT` of the accounts
        with two or more contacts agree (missing values aside), in `columns` order; none when no
        account has two contacts.
    """
    ids = leads[ACCOUNT_ID].astype("string").str.strip()
    members = leads[(ids.notna() & (ids != "")).to_numpy()]
    sizes = members.groupby(ACCOUNT_ID)[ACCOUNT_ID].transform("size")
    members = members[(sizes >= 2).to_numpy()]
    if members.empty:
        return []
    kept = []
    for column in columns:
        agree = members.groupby(ACCOUNT_ID)[column].nunique(dropna=True) <= 1
        if float(agree.mean()) >= ACCOUNT_LEVEL_AGREEMENT:
            kept.append(column)
    return kept


def account_table(leads: pd.DataFrame) -> pd.DataFrame:
    """One row per account of the leads that carry an `account_id`.

    Args:
        leads: `lead_id`, `created_at` (UTC) and `account_id` (missing or empty: no account).

    Returns:
        `account_id`, `created_at` (its first contact's creation), `n_contacts`, sorted by
        creation then id.

    Raises:
        ValueError: The leads have no `account_id` column.
    """
    if ACCOUNT_ID not in leads.columns:
        raise ValueError(f"account_table: leads have no {ACCOUNT_ID} column; found {list(leads.columns)}")
    ids = leads[ACCOUNT_ID].astype("string").str.strip()
    has = (ids.notna() & (ids != "")).to_numpy()
    grouped = pd.DataFrame({ACCOUNT_ID: ids[has].astype(str).to_numpy(), "created_at": leads["created_at"][has].to_numpy()})
    table = grouped.groupby(ACCOUNT_ID, sort=False).agg(created_at=("created_at", "min"), n_contacts=("created_at", "size"))
    table = table.reset_index()
    table["created_at"] = pd.to_datetime(table["created_at"], utc=True)
    return table.sort_values(["created_at", ACCOUNT_ID], kind="stable").reset_index(drop=True)


def account_snapshot_times(
    accounts: pd.DataFrame, offsets_days: tuple[float, ...] | list[float], latest_as_of: pd.Timestamp
) -> pd.DataFrame:
    """Snapshots of each account at offsets after its first contact, while it is unconverted.

    Args:
        accounts: `account_id`, `created_at` (UTC) and optionally `converted_at` (UTC, NaT when
            not converted).
        offsets_days: Days after the account's first contact.
        latest_as_of: No snapshot later than this (the matured-label cutoff for training).

    Returns:
        `account_id`, `as_of` (UTC), `offset_days`, sorted by account then time.
    """
    converted = accounts["converted_at"] if "converted_at" in accounts.columns else pd.Series(pd.NaT, index=accounts.index)
    parts = []
    for offset in sorted(set(offsets_days)):
        as_of = accounts["created_at"] + pd.Timedelta(days=offset)
        keep = (as_of <= latest_as_of) & ~(converted <= as_of)
        parts.append(pd.DataFrame({ACCOUNT_ID: accounts.loc[keep, ACCOUNT_ID].to_numpy(), "as_of": as_of[keep].to_numpy(),
                                   "offset_days": float(offset)}))  # fmt: skip
    frame = pd.concat(parts, ignore_index=True)
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True)
    return frame.sort_values([ACCOUNT_ID, "as_of"], kind="stable").reset_index(drop=True)


def account_contacts(leads: pd.DataFrame, snapshots: pd.DataFrame) -> pd.DataFrame:
    """The contacts each account snapshot knows: its account's leads created at or before `as_of`.

    Args:
        leads: `lead_id`, `created_at` (UTC), `account_id`.
        snapshots: `account_id`, `as_of` (UTC).

    Returns:
        `snapshot` (row position in `snapshots`), `lead_id`, `as_of`, sorted by snapshot then
        the contact's creation. A snapshot of an account with no contact yet has no row.
    """
    ids = leads[ACCOUNT_ID].astype("string").str.strip()
    has = (ids.notna() & (ids != "")).to_numpy()
    members = pd.DataFrame({ACCOUNT_ID: ids[has].astype(str).to_numpy(), "lead_id": leads["lead_id"][has].astype(str).to_numpy(),
                            "created_s": to_epoch_seconds(leads["created_at"])[has]})  # fmt: skip
    members = members.sort_values(["created_s", "lead_id"], kind="stable")
    snaps = pd.DataFrame({ACCOUNT_ID: snapshots[ACCOUNT_ID].astype(str).to_numpy(), "snapshot": np.arange(len(snapshots)),
                          "as_of_s": to_epoch_seconds(snapshots["as_of"])})  # fmt: skip
    pairs = snaps.merge(members, on=ACCOUNT_ID, how="inner", sort=False)
    pairs = pairs[pairs["created_s"] <= pairs["as_of_s"]]
    pairs = pairs.sort_values(["snapshot", "created_s", "lead_id"], kind="stable").reset_index(drop=True)
    as_of = pd.DatetimeIndex(pd.to_datetime(snapshots["as_of"], utc=True))[pairs["snapshot"].to_numpy()]
    return pd.DataFrame({"snapshot": pairs["snapshot"].to_numpy(), "lead_id": pairs["lead_id"].to_numpy(), "as_of": as_of})


def _per_snapshot(snapshot: np.ndarray, values: np.ndarray, n: int, how: str, empty: float = 0.0) -> np.ndarray:
    frame = pd.DataFrame({"s": snapshot, "v": values})
    agg = frame.groupby("s")["v"].agg(how)
    out = np.full(n, empty, dtype=np.float64)
    out[agg.index.to_numpy()] = agg.to_numpy(dtype=np.float64)
    return out


def account_features(
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    snapshots: pd.DataFrame,
    contacts: pd.DataFrame,
    probability: np.ndarray,
    raw: np.ndarray,
    categorical: list[str] | tuple[str, ...] = (),
    numeric: list[str] | tuple[str, ...] = (),
) -> FeatureRows:
    """Point-in-time features of account snapshots (`ACCOUNT_FEATURES`, all numeric).

    Only the contacts listed in `contacts` (those `account_contacts` gives: created at or before
    the snapshot) and only their events at or before `as_of` are used.

    Args:
        leads: `lead_id`, `created_at` (UTC), optional `converted_at`, and what `contact_roles`
            reads (`buying_role`, or `job_role` and `seniority`).
        interactions: `lead_id`, `occurred_at` (UTC), `type`.
        snapshots: `account_id`, `as_of` (UTC), one row per account snapshot.
        contacts: `snapshot`, `lead_id`, `as_of` from `account_contacts(leads, snapshots)`.
        probability: The lead model's probability of each contact row at its `as_of`.
        raw: The lead model's raw log-odds of each contact row.
        categorical: Company attributes (`account_level_attributes`) given as categorical
            features `account_<column>`: the value of the snapshot's first known contact.
        numeric: Company attributes given as numeric features, likewise.

    Returns:
        `FeatureRows`, one row per snapshot in `snapshots` order: `ACCOUNT_FEATURES` and the
        company attributes. A snapshot with no contact has zero counts, NaN for the score and
        time features, and missing attributes.

    Raises:
        ValueError: `probability` or `raw` is not one value per contact row, or a contact's
            lead_id is not in `leads`.
    """
    n, m = len(snapshots), len(contacts)
    p, r = np.asarray(probability, dtype=np.float64), np.asarray(raw, dtype=np.float64)
    if p.shape != (m,) or r.shape != (m,):
        raise ValueError(f"account_features: {m} contact rows but {p.shape} probabilities and {r.shape} raw scores")
    lead_pos = pd.Index(leads["lead_id"].astype(str))
    rows = lead_pos.get_indexer(contacts["lead_id"].astype(str))
    if (rows < 0).any():
        raise ValueError(f"account_features: contacts reference unknown lead_id (e.g. {contacts['lead_id'][rows < 0].head(3).tolist()})")
    snap = contacts["snapshot"].to_numpy(dtype=np.int64)
    as_of_s = to_epoch_seconds(contacts["as_of"])
    created_s = to_epoch_seconds(leads["created_at"])[rows]
    roles = contact_roles(leads)[rows]
    levels = leads["seniority"].tolist() if "seniority" in leads.columns else [None] * len(leads)
    rank_of = np.array([SENIORITY_RANKS.get(_text(v) or "", np.nan) for v in levels], dtype=np.float64)[rows]
    converted_s = np.full(m, np.iinfo(np.int64).max)
    if "converted_at" in leads.columns:
        converted = pd.DatetimeIndex(pd.to_datetime(leads["converted_at"], utc=True))[rows]
        known = ~converted.isna()
        converted_s[known] = to_epoch_seconds(converted[known])

    out: dict[str, np.ndarray] = {}
    out["n_contacts"] = np.bincount(snap, minlength=n).astype(np.float64)
    role_masks = {role: roles == role for role in BUYING_ROLES}
    for role, mask in role_masks.items():
        out[f"has_{role}"] = (np.bincount(snap[mask], minlength=n) > 0).astype(np.float64)
    out["n_roles_covered"] = np.sum([out[f"has_{role}"] for role in BUYING_ROLES], axis=0)
    out["n_senior_contacts"] = np.bincount(snap[rank_of >= SENIOR_RANK], minlength=n).astype(np.float64)
    out["max_seniority_rank"] = _per_snapshot(snap, rank_of, n, "max", np.nan)
    out["n_contacts_converted"] = np.bincount(snap[converted_s <= as_of_s], minlength=n).astype(np.float64)

    out["p_max"] = _per_snapshot(snap, p, n, "max", np.nan)
    out["p_mean"] = _per_snapshot(snap, p, n, "mean", np.nan)
    out["p_sum"] = _per_snapshot(snap, p, n, "sum")
    out["p_noisy_or"] = noisy_or(snap, p, n)
    out["p_second"] = _second_largest(snap, p, n)
    out["raw_max"] = _per_snapshot(snap, r, n, "max", np.nan)
    out["raw_mean"] = _per_snapshot(snap, r, n, "mean", np.nan)
    for role, mask in role_masks.items():
        out[f"p_max_{role}"] = _per_snapshot(snap[mask], p[mask], n, "max", 0.0)

    # Events of the known contacts at or before the snapshot: (contact row, event) pairs.
    events = pd.DataFrame({"lead_id": interactions["lead_id"].astype(str).to_numpy(), "at": to_epoch_seconds(interactions["occurred_at"]),
                           "type": interactions["type"].astype(str).to_numpy()})  # fmt: skip
    pairs = pd.DataFrame({"row": np.arange(m), "lead_id": contacts["lead_id"].astype(str).to_numpy()}).merge(events, on="lead_id", how="inner")
    pair_row = pairs["row"].to_numpy(dtype=np.int64)
    age_s = as_of_s[pair_row] - pairs["at"].to_numpy(dtype=np.int64)
    seen = age_s >= 0
    pair_row, age_s, pair_type = pair_row[seen], age_s[seen], pairs["type"].to_numpy()[seen]
    pair_snap = snap[pair_row]
    for w in ENGAGED_WINDOWS_DAYS:
        recent = age_s <= w * SECONDS_PER_DAY
        engaged_rows = np.unique(pair_row[recent])
        out[f"n_engaged_{w}d"] = np.bincount(snap[engaged_rows], minlength=n).astype(np.float64)
        role_pairs = pd.DataFrame({"s": snap[engaged_rows], "role": roles[engaged_rows]})
        role_pairs = role_pairs[role_pairs["role"] != UNKNOWN_ROLE].drop_duplicates()
        out[f"n_roles_engaged_{w}d"] = np.bincount(role_pairs["s"].to_numpy(dtype=np.int64), minlength=n).astype(np.float64)
        out[f"n_events_{w}d"] = np.bincount(pair_snap[recent], minlength=n).astype(np.float64)
    out["n_events_total"] = np.bincount(pair_snap, minlength=n).astype(np.float64)
    pair_role = roles[pair_row]
    for role in BUYING_ROLES:
        mine = pair_role == role
        out[f"n_events_30d_{role}"] = np.bincount(pair_snap[mine & (age_s <= 30 * SECONDS_PER_DAY)], minlength=n).astype(np.float64)
        out[f"days_since_last_event_{role}"] = _per_snapshot(pair_snap[mine], age_s[mine] / SECONDS_PER_DAY, n, "min", np.nan)
    active_7d = np.unique(pair_row[age_s <= 7 * SECONDS_PER_DAY])
    out["p_max_engaged_7d"] = _per_snapshot(snap[active_7d], p[active_7d], n, "max", 0.0)
    recent30 = age_s <= 30 * SECONDS_PER_DAY
    out["n_event_types_30d"] = _distinct_per_snapshot(pair_snap[recent30], pair_type[recent30], n)
    out["n_event_types_total"] = _distinct_per_snapshot(pair_snap, pair_type, n)
    out["days_since_last_event"] = _per_snapshot(pair_snap, age_s / SECONDS_PER_DAY, n, "min", np.nan)
    contact_age = (as_of_s - created_s) / SECONDS_PER_DAY
    out["days_since_first_contact"] = _per_snapshot(snap, contact_age, n, "max", np.nan)
    out["days_since_last_contact"] = _per_snapshot(snap, contact_age, n, "min", np.nan)
    # The company's attributes, as its first known contact gives them (contacts are in creation order).
    first = np.full(n, -1, dtype=np.int64)
    first[snap[::-1]] = rows[::-1]
    seen_first = first >= 0
    categories: dict[str, np.ndarray] = {}
    for column in categorical:
        values = np.full(n, None, dtype=object)
        values[seen_first] = _category_values(leads[column].to_numpy(dtype=object)[first[seen_first]])
        categories[ACCOUNT_ATTRIBUTE_PREFIX + column] = values
    numbers = {name: out[name] for name in ACCOUNT_FEATURES}
    for column in numeric:
        values_n = np.full(n, np.nan)
        values_n[seen_first] = _numeric_column(leads[column])[first[seen_first]]
        numbers[ACCOUNT_ATTRIBUTE_PREFIX + column] = values_n
    return FeatureRows(categorical=categories, numeric=numbers)


def noisy_or(snapshot: np.ndarray, probability: np.ndarray, n: int) -> np.ndarray:
    """1 - prod(1 - p) of each snapshot's contacts (0 for a snapshot without contacts).

    Args:
        snapshot: Snapshot position of each contact row.
        probability: Each contact row's probability.
        n: Number of snapshots.
    """
    log_none = np.zeros(n, dtype=np.float64)
    np.add.at(log_none, snapshot, np.log1p(-np.clip(probability, 0.0, 1.0 - 1e-12)))
    return -np.expm1(log_none)


def _second_largest(snapshot: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float64)
    if snapshot.size == 0:
        return out
    order = np.lexsort((-values, snapshot))
    s, v = snapshot[order], values[order]
    first = np.r_[True, s[1:] != s[:-1]]
    rank = np.arange(s.size) - np.maximum.accumulate(np.where(first, np.arange(s.size), 0))
    second = rank == 1
    out[s[second]] = v[second]
    return out


def _distinct_per_snapshot(snapshot: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    if snapshot.size == 0:
        return np.zeros(n, dtype=np.float64)
    unique = pd.DataFrame({"s": snapshot, "t": labels}).drop_duplicates()
    return np.bincount(unique["s"].to_numpy(dtype=np.int64), minlength=n).astype(np.float64)
