"""Accounts on top of the simulated funnel: buying groups whose joint behaviour converts the account.

The leads, their interactions and their own conversions are those of `simulator.funnel`
(a lead still converts from its own latents). This module groups them into accounts of 1-8
contacts: leads of the same industry and company size, created close in time
(within `ACCOUNT_FORMING_DAYS` of the account's first contact), form one company's buying group;
bigger companies bring bigger groups. Contacts of one account share its head count and, for
corporate addresses, its email domain (neither enters a lead's latents). A contact's role in the
buying group (`features.accounts.buying_role`: decision maker, champion, technical, user)
follows its seniority and job role.

The account converts (a closed deal) from a hazard of the group's *joint* behaviour, on whole
days since the account's first contact (its value at the middle of each day):

    e_r(t) = 1 - prod_{contacts i of role r, created by t} (1 - s_i(t))    s_i: contact i's
                                                                          saturated intent
    g(t)   = sum_r w_r e_r(t) / sum_r w_r                                  role coverage
    m_d    = k m_{d-1} + (1 - k) g_d,  k = exp(-1 / DEAL_CYCLE_DAYS)       momentum (daily)
    λ_A(d) = ACCOUNT_HAZARD_SCALE * exp(ACCOUNT_FIT_WEIGHT * fit_A) * (ACCOUNT_HAZARD_FLOOR + m_d^p)

(p = ACCOUNT_COVERAGE_POWER = 2): a deal closes weeks after the group engaged (the momentum),
and a buying group in which the decision maker, a champion and the technical evaluator are all
engaged converts far more often than one enthusiastic user, and no single contact's
probability tells it. `fit_A` is the company's firmographic fit (the lead simulator's effects
of industry and company size; a company's contacts may sit in several countries) plus a
small hidden part. The hazard depends on
latents only, so `true_account_conversion_probability` integrates exactly what the sampler
inverted; what the oracle knows and a model cannot is the hidden fit, the contacts' future
intent and the contacts who join the group later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.signal import lfilter

from features.accounts import ACCOUNT_ID, BUYING_ROLE, BUYING_ROLES, contact_roles
from simulator.funnel import (
    COMPANY_SIZES,
    INDUSTRIES,
    SECONDS_PER_DAY,
    Simulation,
    _intent,
    _iso,
    _latents,
    _saturated,
    simulate,
    write_simulation,
)

# --- Buying groups ---------------------------------------------------------------------------------
MAX_CONTACTS = 8
# P(each of up to 7 further contacts) by company size: more people buy in a bigger company.
EXTRA_CONTACT_SHARE: dict[str, float] = {
    "1-9": 0.12,
    "10-49": 0.22,
    "50-199": 0.34,
    "200-499": 0.40,
    "500-999": 0.46,
    "1000+": 0.52,
}
ACCOUNT_FORMING_DAYS = 30.0  # a contact later than this after the first starts another account
LEADS_PER_ACCOUNT_DRAWN = 3.6  # leads simulated per requested account (some end up unused)

# --- Account hazard (shared by the sampler and the oracle) ----------------------------------------
ROLE_WEIGHTS: dict[str, float] = {"decision_maker": 1.0, "champion": 0.7, "technical": 0.6, "user": 0.3}
ACCOUNT_HAZARD_SCALE = 0.15  # per day, for fit 0 and the whole group fully engaged for a deal cycle
ACCOUNT_HAZARD_FLOOR = 0.004  # deals without visible engagement (sales-led)
DEAL_CYCLE_DAYS = 30.0  # e-folding time of the momentum a deal needs: it closes weeks after the group engaged
ACCOUNT_COVERAGE_POWER = 2.0  # above 1: breadth of the engaged group beats one keen contact
ACCOUNT_FIT_WEIGHT = 1.0
ACCOUNT_FIT_HIDDEN_SD = 0.15

ACCOUNT_COLUMNS: tuple[str, ...] = ("account_id", "created_at", "converted_at", "n_contacts")
ACCOUNT_TRUTH_COLUMNS: tuple[str, ...] = ("account_id", "created_at", "fit", "fit_hidden")
CONTACT_COLUMNS: tuple[str, ...] = ("lead_id", "account_id", "buying_role")


@dataclass(frozen=True)
class AccountTruth:
    """What the account oracle reads: the accounts' latents, who belongs to which, the leads' latents.

    Attributes:
        accounts: `ACCOUNT_TRUTH_COLUMNS` (created_at UTC; fit is the hazard's fit_A).
        contacts: `CONTACT_COLUMNS`: each contact's account and buying-group role.
        leads: The lead truth of `simulator.funnel` (`TRUTH_COLUMNS`) for at least the contacts.
    """

    accounts: pd.DataFrame
    contacts: pd.DataFrame
    leads: pd.DataFrame


@dataclass(frozen=True)
class AccountSimulation:
    """A simulated export with accounts.

    Attributes:
        leads: The funnel's leads with `account_id` (None for a lead of no account) and
            `buying_role`.
        interactions: The funnel's interactions.
        accounts: `ACCOUNT_COLUMNS`: converted_at NaT when the account had not converted by
            `export_at`; sorted by creation (the id follows it).
        truth: The oracle's inputs (never features).
        export_at: The export time (UTC).
        meta: Seed, sizes and a description.
    """

    leads: pd.DataFrame
    interactions: pd.DataFrame
    accounts: pd.DataFrame
    truth: AccountTruth
    export_at: pd.Timestamp
    meta: dict[str, object]

    def funnel(self) -> Simulation:
        """The lead-level `Simulation` (leads without the account columns)."""
        leads = self.leads.drop(columns=[ACCOUNT_ID, BUYING_ROLE])
        return Simulation(leads=leads, interactions=self.interactions, truth=self.truth.leads, export_at=self.export_at,
                          meta=self.meta)  # fmt: skip


def _group_into_accounts(rng: np.random.Generator, leads: pd.DataFrame) -> np.ndarray:
    """Account number of each lead (-1: none yet), grouping leads of one company stratum close in time."""
    account = np.full(len(leads), -1, dtype=np.int64)
    created_s = leads["created_at"].dt.as_unit("s").array.asi8
    share = leads["company_size"].map(EXTRA_CONTACT_SHARE).to_numpy(dtype=np.float64)
    strata = leads.groupby(["industry", "company_size"], sort=True).indices
    next_id = 0
    for key in sorted(strata):
        rows = np.sort(strata[key])  # leads are sorted by creation already
        i = 0
        while i < rows.size:
            size = 1 + rng.binomial(MAX_CONTACTS - 1, share[rows[i]])
            first_s = created_s[rows[i]]
            j = i + 1
            while j < rows.size and j - i < size and created_s[rows[j]] - first_s <= ACCOUNT_FORMING_DAYS * SECONDS_PER_DAY:
                j += 1
            account[rows[i:j]] = next_id
            next_id += 1
            i = j
    return account


def _company_fit(leads: pd.DataFrame) -> np.ndarray:
    return (
        leads["industry"].map({k: v[1] for k, v in INDUSTRIES.items()}).to_numpy(dtype=np.float64)
        + leads["company_size"].map({k: v[1] for k, v in COMPANY_SIZES.items()}).to_numpy(dtype=np.float64)
    )


def _shared_company_details(leads: pd.DataFrame, first_row: np.ndarray, account: np.ndarray) -> pd.DataFrame:
    """Contacts of one account share its head count and corporate email domain (its first contact's)."""
    out = leads.copy()
    has = account >= 0
    counts = out["employee_count"].to_numpy().copy()
    counts[has] = counts[first_row[account[has]]]
    out["employee_count"] = counts
    email = out["email"].to_numpy(dtype=object).copy()
    domain = np.array([e.split("@", 1)[1] if isinstance(e, str) and e.count("@") == 1 else "" for e in email], dtype=object)
    free_or_other = np.array([d == "" or "-" not in d for d in domain])  # corporate domains are word-suffix.tld
    corporate = has & ~free_or_other
    # The account's domain: that of its first corporate contact.
    account_domain: dict[int, str] = {}
    for row in np.flatnonzero(corporate):
        account_domain.setdefault(int(account[row]), str(domain[row]))
    for row in np.flatnonzero(corporate):
        email[row] = f"{email[row].split('@', 1)[0]}@{account_domain[int(account[row])]}"
    out["email"] = email
    return out


def simulate_accounts(
    n_accounts: int,
    seed: int,
    start: str = "2024-01-01",
    span_days: int = 540,
    drift: float = 0.0,
    show_progress: bool = False,
) -> AccountSimulation:
    """Simulate an export of `n_accounts` accounts (buying groups of 1-8 leads) and their outcomes.

    Leads come from `simulator.funnel.simulate` with the same seed; the leads left over when
    `n_accounts` accounts are chosen stay in the export without an account (a CRM holds such
    leads too).

    Args:
        n_accounts: Number of accounts (at least 1).
        seed: Seed of every draw.
        start: First day of lead creation.
        span_days: Days of lead creation; the export is taken at its end.
        drift: Passed to the lead simulator (the account hazard itself does not drift).
        show_progress: Show the lead simulator's progress bar.

    Returns:
        The `AccountSimulation`.

    Raises:
        ValueError: n_accounts < 1 (the lead simulator checks the other arguments).
    """
    if n_accounts < 1:
        raise ValueError(f"simulate_accounts: n_accounts must be at least 1, got {n_accounts}")
    n_leads = int(np.ceil(n_accounts * LEADS_PER_ACCOUNT_DRAWN))
    sim = simulate(n_leads, seed, start=start, span_days=span_days, drift=drift, show_progress=show_progress)
    rng = np.random.default_rng([seed, 1])  # a stream of its own: the leads are those of simulate(seed)
    group = _group_into_accounts(rng, sim.leads)
    n_groups = int(group.max()) + 1
    if n_groups < n_accounts:
        raise ValueError(f"simulate_accounts: {n_leads} leads formed only {n_groups} accounts, fewer than {n_accounts}")
    kept = np.sort(rng.choice(n_groups, size=n_accounts, replace=False))
    number = np.full(n_groups, -1, dtype=np.int64)
    created_s = sim.leads["created_at"].dt.as_unit("s").array.asi8
    first_row = np.full(n_groups, -1, dtype=np.int64)
    for row in range(len(group) - 1, -1, -1):  # leads are in creation order: the last write is the first contact
        first_row[group[row]] = row
    order = kept[np.lexsort((kept, created_s[first_row[kept]]))]
    number[order] = np.arange(n_accounts)
    account = number[group]
    first_of = np.full(n_accounts, -1, dtype=np.int64)
    first_of[number[order]] = first_row[order]

    leads = _shared_company_details(sim.leads, first_of, account)
    ids = np.array([f"A-{i:06d}" for i in range(1, n_accounts + 1)], dtype=object)
    no_account = np.full(len(leads), None, dtype=object)
    leads[ACCOUNT_ID] = pd.Series(np.where(account >= 0, ids[np.maximum(account, 0)], no_account), dtype=object)
    leads[BUYING_ROLE] = pd.Series(np.where(account >= 0, contact_roles(leads), no_account), dtype=object)

    account_created = sim.leads["created_at"].iloc[first_of].reset_index(drop=True)
    fit_hidden = rng.normal(0.0, ACCOUNT_FIT_HIDDEN_SD, n_accounts)
    accounts_truth = pd.DataFrame(
        {"account_id": ids, "created_at": account_created, "fit": _company_fit(sim.leads.iloc[first_of]) + fit_hidden,
         "fit_hidden": fit_hidden}  # fmt: skip
    )
    members = account >= 0
    contacts = pd.DataFrame(
        {"lead_id": leads.loc[members, "lead_id"].to_numpy(), "account_id": leads.loc[members, ACCOUNT_ID].to_numpy(),
         "buying_role": leads.loc[members, BUYING_ROLE].to_numpy()}  # fmt: skip
    )
    truth = AccountTruth(accounts=accounts_truth, contacts=contacts, leads=sim.truth)

    # Conversion: invert the cumulative daily hazard since the account's first contact at an Exp(1) draw.
    life_days = (sim.export_at - account_created).dt.total_seconds().to_numpy() / SECONDS_PER_DAY
    n_days = int(np.ceil(life_days.max()))
    hazard = _account_cell_hazard(truth, np.arange(n_accounts), np.zeros(n_accounts), n_days)
    cumulative = np.cumsum(hazard, axis=1)
    target = rng.exponential(size=n_accounts)
    day = (cumulative < target[:, None]).sum(axis=1)
    day_c = np.minimum(day, n_days - 1)
    rows = np.arange(n_accounts)
    before = np.where(day_c > 0, cumulative[rows, day_c - 1], 0.0)
    conv_days = day_c + (target - before) / hazard[rows, day_c]
    converted = (day < n_days) & (conv_days < life_days)
    conv_at = account_created + pd.to_timedelta(np.where(converted, np.floor(conv_days * SECONDS_PER_DAY), 0), unit="s")
    accounts = pd.DataFrame(
        {"account_id": ids, "created_at": account_created, "converted_at": conv_at.where(converted),
         "n_contacts": np.bincount(account[members], minlength=n_accounts)}  # fmt: skip
    )
    meta = {
        **sim.meta,
        "n_accounts": n_accounts,
        "description": (
            "Simulated B2B funnel with accounts (simulator.accounts): leads of simulator.funnel grouped into buying "
            "groups of 1-8 contacts; an account converts from a hazard of its group's joint, role-weighted intent. "
            "truth.csv, account_truth.csv and contacts.csv hold the latents; they are never features."
        ),
    }
    return AccountSimulation(leads=leads, interactions=sim.interactions, accounts=accounts, truth=truth,
                             export_at=sim.export_at, meta=meta)  # fmt: skip


def _account_cell_hazard(truth: AccountTruth, account_rows: np.ndarray, start_days: np.ndarray, n_cells: int) -> np.ndarray:
    """Account hazard of whole days since each account's first contact, from `floor(start_days)` on.

    Args:
        truth: The oracle's inputs.
        account_rows: Row of each query in `truth.accounts`.
        start_days: Days since the account's first contact where each query starts.
        n_cells: Days per query.

    Returns:
        (queries, n_cells) hazard per day, at the middle of each day.
    """
    accounts, contacts = truth.accounts, truth.contacts
    n = account_rows.size
    first_cell = np.floor(start_days).astype(np.int64)
    # The deal follows the group's engagement since the account began: coverage from day 0 on.
    n_all = int(first_cell.max(initial=0)) + n_cells
    mid = np.arange(n_all)[None, :] + 0.5  # days since the account's first contact
    acc_pos = pd.Index(accounts["account_id"]).get_indexer(contacts["account_id"])
    lead_rows = pd.Index(truth.leads["lead_id"]).get_indexer(contacts["lead_id"])
    if (acc_pos < 0).any() or (lead_rows < 0).any():
        raise ValueError("account truth: contacts reference an account or lead the truth does not hold")
    role_code = pd.Index(BUYING_ROLES).get_indexer(contacts["buying_role"])
    # (query, contact) pairs: each query meets every contact of its account.
    by_account = pd.DataFrame({"acc": acc_pos, "c": np.arange(len(contacts))}).groupby("acc")["c"].apply(np.asarray)
    pair_q, pair_c = [], []
    for q, acc in enumerate(account_rows.tolist()):
        members = by_account.get(acc)
        if members is not None:
            pair_q.append(np.full(members.size, q))
            pair_c.append(members)
    pq = np.concatenate(pair_q) if pair_q else np.zeros(0, dtype=np.int64)
    pc = np.concatenate(pair_c) if pair_c else np.zeros(0, dtype=np.int64)
    acc_created = pd.DatetimeIndex(accounts["created_at"]).as_unit("s").asi8
    lead_created = pd.DatetimeIndex(truth.leads["created_at"]).as_unit("s").asi8
    lag = (lead_created[lead_rows[pc]] - acc_created[acc_pos[pc]]) / SECONDS_PER_DAY  # contact joins this late
    tau = mid - lag[:, None]
    s = np.where(tau >= 0, _saturated(_intent(_latents(truth.leads, lead_rows[pc]), np.maximum(tau, 0.0))), 0.0)
    log_none = np.zeros((n * len(BUYING_ROLES), n_all))
    np.add.at(log_none, pq * len(BUYING_ROLES) + role_code[pc], np.log1p(-s))
    engaged = -np.expm1(log_none).reshape(n, len(BUYING_ROLES), n_all)
    weights = np.array([ROLE_WEIGHTS[r] for r in BUYING_ROLES])
    coverage = np.einsum("r,qrc->qc", weights, engaged) / weights.sum()
    # Momentum: the coverage smoothed day by day over the deal cycle (m_d = k m_{d-1} + (1 - k) g_d).
    keep = np.exp(-1.0 / DEAL_CYCLE_DAYS)
    momentum = lfilter([1.0 - keep], [1.0, -keep], coverage, axis=1)
    cells = first_cell[:, None] + np.arange(n_cells)[None, :]
    momentum = np.take_along_axis(momentum, cells, axis=1)
    fit = accounts["fit"].to_numpy(dtype=np.float64)[account_rows]
    return ACCOUNT_HAZARD_SCALE * np.exp(ACCOUNT_FIT_WEIGHT * fit)[:, None] * (ACCOUNT_HAZARD_FLOOR + momentum**ACCOUNT_COVERAGE_POWER)


_ORACLE_BLOCK = 5_000  # account snapshots per block


def true_account_conversion_probability(
    truth: AccountTruth, account_ids: ArrayLike, as_of: ArrayLike, horizon_days: float
) -> np.ndarray:
    """P(account converts in (as_of, as_of + horizon] | not converted at as_of), from the latents.

    Integrates exactly the piecewise-constant daily hazard the simulator sampled from.

    Args:
        truth: `AccountSimulation.truth` (or `read_account_truth`).
        account_ids: Account of each snapshot.
        as_of: Snapshot time of each (UTC when naive), or one for all.
        horizon_days: Window length in days (> 0).

    Returns:
        float64 probabilities, one per snapshot.

    Raises:
        ValueError: horizon_days <= 0, an unknown account_id, or an as_of before the account's
            first contact.
    """
    if not horizon_days > 0:
        raise ValueError(f"true_account_conversion_probability: horizon_days must be > 0, got {horizon_days}")
    ids = np.asarray(account_ids, dtype=object).ravel()
    rows = pd.Index(truth.accounts["account_id"]).get_indexer(ids)
    if (rows < 0).any():
        unknown = pd.unique(ids[rows < 0])
        raise ValueError(f"true_account_conversion_probability: {unknown.size} account_id(s) not in truth (e.g. {', '.join(map(str, unknown[:3]))})")
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(as_of).ravel(), utc=True))
    if stamps.size == 1 and ids.size != 1:
        stamps = stamps.repeat(ids.size)
    if stamps.size != ids.size:
        raise ValueError(f"true_account_conversion_probability: {ids.size} account_ids but {stamps.size} as_of values")
    created = pd.DatetimeIndex(truth.accounts["created_at"]).as_unit("ns").asi8[rows]
    start = (stamps.as_unit("ns").asi8 - created) / (SECONDS_PER_DAY * 1e9)
    if (start < 0).any():
        raise ValueError(f"true_account_conversion_probability: {int((start < 0).sum())} snapshot(s) before their account's first contact")
    n_cells = int(np.ceil(horizon_days)) + 1
    out = np.empty(ids.size, dtype=np.float64)
    for lo in range(0, ids.size, _ORACLE_BLOCK):
        hi = min(lo + _ORACLE_BLOCK, ids.size)
        a = start[lo:hi, None]
        cells = np.floor(a) + np.arange(n_cells)[None, :]
        overlap = np.clip(np.minimum(cells + 1.0, a + horizon_days) - np.maximum(cells, a), 0.0, None)
        hazard = _account_cell_hazard(truth, rows[lo:hi], start[lo:hi], n_cells)
        out[lo:hi] = -np.expm1(-(hazard * overlap).sum(axis=1))
    return out


def write_account_simulation(sim: AccountSimulation, out_dir: Path) -> None:
    """Write the funnel's files (leads.csv with `account_id`), accounts.csv and the account truth.

    Files: leads.csv, interactions.csv, truth.csv, meta.json (as `write_simulation`, leads with
    the extra columns `account_id` and `buying_role`), accounts.csv (`ACCOUNT_COLUMNS`),
    account_truth.csv and contacts.csv (the oracle's inputs).

    Args:
        sim: The simulation.
        out_dir: Target folder (created if missing).
    """
    out_dir = Path(out_dir)
    write_simulation(sim.funnel(), out_dir)
    leads = pd.read_csv(out_dir / "leads.csv", dtype=str, keep_default_na=False)
    leads[ACCOUNT_ID] = sim.leads[ACCOUNT_ID].fillna("").to_numpy()
    leads[BUYING_ROLE] = sim.leads[BUYING_ROLE].fillna("").to_numpy()
    leads.to_csv(out_dir / "leads.csv", index=False)
    sim.accounts.assign(created_at=_iso(sim.accounts["created_at"]), converted_at=_iso(sim.accounts["converted_at"])).to_csv(
        out_dir / "accounts.csv", index=False, columns=list(ACCOUNT_COLUMNS)
    )
    sim.truth.accounts.assign(created_at=_iso(sim.truth.accounts["created_at"])).to_csv(
        out_dir / "account_truth.csv", index=False, columns=list(ACCOUNT_TRUTH_COLUMNS)
    )
    sim.truth.contacts.to_csv(out_dir / "contacts.csv", index=False, columns=list(CONTACT_COLUMNS))
    (out_dir / "meta.json").write_text(json.dumps(sim.meta, indent=2) + "\n", encoding="utf-8")


def read_account_truth(directory: Path) -> AccountTruth:
    """The oracle's inputs from a folder written by `write_account_simulation`."""
    from simulator.funnel import read_truth

    directory = Path(directory)
    accounts = pd.read_csv(directory / "account_truth.csv", dtype={"account_id": str})
    accounts["created_at"] = pd.to_datetime(accounts["created_at"], utc=True).astype("datetime64[ns, UTC]")
    contacts = pd.read_csv(directory / "contacts.csv", dtype=str)
    return AccountTruth(accounts=accounts, contacts=contacts, leads=read_truth(directory / "truth.csv"))
