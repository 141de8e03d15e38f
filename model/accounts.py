"""The account model: an optional part of a bundle folder, and scoring one account with it.

An account model (`training.accounts`) is a LightGBM model on account snapshots
(`features.accounts`): it predicts that the account converts within `horizon_days`. It is
saved beside the lead model as `accounts_model.txt` and `accounts.json`; a bundle without them
loads as before (`load_account_model` returns None).

`score_account` scores one account now: its contacts' lead probabilities from the bundle's
lead model, the account features, the probability, tier and top reasons, and the contacts
ranked by their contribution: how much the account's probability falls when the contact is
left out (leave one out), i.e. whom to call first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from features.accounts import (
    ACCOUNT_ATTRIBUTE_PREFIX,
    ACCOUNT_FEATURES,
    ACCOUNT_ID,
    BUYING_ROLES,
    account_contacts,
    account_features,
    contact_roles,
)
from features.engine import FeatureRows, snapshot_features
from model.bundle import Calibration, ScoringModel, Tiers, encode_matrix

ACCOUNT_MODEL_FILE = "accounts_model.txt"
ACCOUNT_META_FILE = "accounts.json"
ACCOUNT_FORMAT = 1

# What each account feature means, for the reasons.
FEATURE_LABELS: dict[str, str] = {
    "n_contacts": "contacts known",
    "n_roles_covered": "buying-group roles covered",
    "has_decision_maker": "a decision maker among the contacts",
    "has_champion": "a champion among the contacts",
    "has_technical": "a technical evaluator among the contacts",
    "has_user": "a user among the contacts",
    "n_senior_contacts": "director-level or more senior contacts",
    "max_seniority_rank": "most senior contact",
    "n_contacts_converted": "contacts already converted",
    "p_max": "best contact's lead probability",
    "p_mean": "mean lead probability of the contacts",
    "p_sum": "sum of the contacts' lead probabilities",
    "p_second": "second-best contact's lead probability",
    "p_noisy_or": "chance that any contact converts",
    "raw_max": "best contact's lead score",
    "raw_mean": "mean lead score of the contacts",
    "p_max_decision_maker": "decision maker's lead probability",
    "p_max_champion": "champion's lead probability",
    "p_max_technical": "technical evaluator's lead probability",
    "p_max_user": "user's lead probability",
    "n_engaged_7d": "contacts active in the last 7 days",
    "n_engaged_30d": "contacts active in the last 30 days",
    "n_roles_engaged_7d": "roles active in the last 7 days",
    "n_roles_engaged_30d": "roles active in the last 30 days",
    "n_events_7d": "events in the last 7 days",
    "n_events_30d": "events in the last 30 days",
    "n_events_total": "events since the first contact",
    "p_max_engaged_7d": "best lead probability among contacts active in the last 7 days",
    **{f"n_events_30d_{role}": f"events of the {role.replace('_', ' ')} contacts in the last 30 days" for role in BUYING_ROLES},
    **{f"days_since_last_event_{role}": f"days since a {role.replace('_', ' ')} contact's last event" for role in BUYING_ROLES},
    "n_event_types_30d": "kinds of events in the last 30 days",
    "n_event_types_total": "kinds of events since the first contact",
    "days_since_last_event": "days since the account's last event",
    "days_since_first_contact": "days since the first contact",
    "days_since_last_contact": "days since the latest contact joined",
}


class AccountMeta(BaseModel):
    """What `accounts.json` holds: the account model's features, scale, tiers and how it was measured."""

    model_config = ConfigDict(extra="forbid")

    format: int = ACCOUNT_FORMAT
    horizon_days: float
    feature_names: list[str]
    categorical_levels: dict[str, list[str]] = Field(default_factory=dict)
    company_categorical: list[str] = Field(default_factory=list, description="Lead attributes given as the company's categories")
    company_numeric: list[str] = Field(default_factory=list, description="Lead attributes given as the company's numbers")
    calibration: Calibration
    tiers: Tiers
    trained_at: str
    lead_scores: str = Field(description="Where the contacts' lead probabilities of the training rows came from")
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class AccountReason:
    """One driver of an account's probability: a feature, its value and its effect in probability points."""

    feature: str
    label: str
    value: float | str | None
    contribution: float
    log_odds: float


class AccountModel:
    """A loaded account model: probabilities, tiers and reasons of account feature rows."""

    def __init__(self, booster: lgb.Booster, meta: AccountMeta) -> None:
        if booster.num_feature() != len(meta.feature_names):
            raise ValueError(f"account model: {booster.num_feature()} features in the model, {len(meta.feature_names)} in {ACCOUNT_META_FILE}")
        company = [ACCOUNT_ATTRIBUTE_PREFIX + c for c in (*meta.company_categorical, *meta.company_numeric)]
        unknown = [f for f in meta.feature_names if f not in ACCOUNT_FEATURES and f not in company]
        if unknown:
            raise ValueError(f"account model: {ACCOUNT_META_FILE} names features this leadscore does not compute: {unknown}")
        self.booster = booster
        self.meta = meta

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / ACCOUNT_MODEL_FILE))
        (directory / ACCOUNT_META_FILE).write_text(self.meta.model_dump_json(indent=2))
        return directory

    def matrix(self, rows: FeatureRows) -> NDArray[Any]:
        return encode_matrix(rows, self.meta.feature_names, self.meta.categorical_levels)

    def raw(self, matrix: NDArray[Any]) -> NDArray[Any]:
        return np.asarray(self.booster.predict(matrix, raw_score=True, num_threads=1))

    def probability(self, matrix: NDArray[Any]) -> NDArray[Any]:
        return self.meta.calibration.apply(self.raw(matrix))

    def tier(self, probability: float) -> str:
        return self.meta.tiers.of(probability)

    def reasons(self, matrix_row: NDArray[Any], top_k: int = 3) -> list[AccountReason]:
        """The `top_k` features moving one account's probability most, either way, by exact TreeSHAP.

        Args:
            matrix_row: One row of `matrix`.
            top_k: How many reasons.

        Returns:
            Reasons sorted by absolute effect; `contribution` in probability points (the
            probability minus the probability without that feature's log-odds, times 100).
        """
        contrib = np.asarray(self.booster.predict(matrix_row[None, :], pred_contrib=True, num_threads=1))[0]
        total = float(contrib.sum())
        order = np.argsort(-np.abs(contrib[:-1]), kind="stable")[:top_k]
        calibrate = self.meta.calibration.apply
        p_full = float(calibrate(np.array([total]))[0])
        reasons = []
        for j in order:
            if contrib[j] == 0:
                continue
            name = self.meta.feature_names[j]
            points = 100.0 * (p_full - float(calibrate(np.array([total - contrib[j]]))[0]))
            code = float(matrix_row[j])
            levels = self.meta.categorical_levels.get(name)
            value: float | str | None = None if np.isnan(code) else (levels[int(code)] if levels is not None else code)
            label = FEATURE_LABELS.get(name, f"the company's {name.removeprefix(ACCOUNT_ATTRIBUTE_PREFIX).replace('_', ' ')}")
            reasons.append(AccountReason(name, label, value, points, float(contrib[j])))
        return reasons


def load_account_model(directory: Path | str) -> AccountModel | None:
    """The bundle folder's account model, or None when the bundle has none.

    Raises:
        ValueError: One of the two files is there without the other, or its format is unknown.
    """
    directory = Path(directory)
    model_path, meta_path = directory / ACCOUNT_MODEL_FILE, directory / ACCOUNT_META_FILE
    if not model_path.is_file() and not meta_path.is_file():
        return None
    if not (model_path.is_file() and meta_path.is_file()):
        missing = ACCOUNT_MODEL_FILE if not model_path.is_file() else ACCOUNT_META_FILE
        raise ValueError(f"model bundle {directory}: {missing} is missing (an account model needs both {ACCOUNT_MODEL_FILE} and {ACCOUNT_META_FILE})")
    meta = AccountMeta.model_validate_json(meta_path.read_text())
    if meta.format != ACCOUNT_FORMAT:
        raise ValueError(f"model bundle {directory}: {ACCOUNT_META_FILE} has format {meta.format}, this leadscore reads {ACCOUNT_FORMAT}")
    return AccountModel(lgb.Booster(model_file=str(model_path)), meta)


def lead_model_scores(lead_model: ScoringModel, leads: pd.DataFrame, interactions: pd.DataFrame, contacts: pd.DataFrame) -> tuple[NDArray[Any], NDArray[Any]]:
    """The bundle lead model's probability and raw log-odds of each contact row at its `as_of`."""
    if contacts.empty:
        return np.zeros(0), np.zeros(0)
    rows = snapshot_features(leads, interactions, contacts[["lead_id", "as_of"]], lead_model.spec)
    matrix = lead_model.encode(rows)
    raw = lead_model.raw(matrix)
    return lead_model.meta.calibration.apply(raw), raw


@dataclass(frozen=True)
class ContactRank:
    """A contact of a scored account: its lead probability and what it adds to the account's."""

    lead_id: str
    buying_role: str
    probability: float
    contribution: float  # account probability points lost without this contact


@dataclass(frozen=True)
class AccountScore:
    """One account scored at one time."""

    account_id: str
    as_of: pd.Timestamp
    probability: float
    tier: str
    reasons: list[AccountReason]
    contacts: list[ContactRank]


def score_accounts(
    account_model: AccountModel,
    lead_model: ScoringModel,
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    as_of: pd.Timestamp,
    account_ids: list[str] | None = None,
    top_k: int = 3,
) -> list[AccountScore]:
    """Score accounts at `as_of`: probability, tier, reasons and contacts ranked by contribution.

    Args:
        account_model: The bundle's account model.
        lead_model: The bundle's lead model (scores the contacts).
        leads: `lead_id`, `created_at`, `account_id` and the lead model's attribute columns;
            contacts created after `as_of` are not seen.
        interactions: `lead_id`, `occurred_at`, `type` (events after `as_of` are not seen).
        as_of: When to score (UTC).
        account_ids: Accounts to score; None scores every account with a contact by `as_of`.
        top_k: Reasons per account.

    Returns:
        One `AccountScore` per account with at least one contact by `as_of`, in the order asked
        (or by account id).
    """
    ids = leads[ACCOUNT_ID].astype("string").str.strip()
    known = sorted({str(a) for a in ids.dropna() if a != ""})
    wanted = known if account_ids is None else [a for a in account_ids if a in set(known)]
    if not wanted:
        return []
    snapshots = pd.DataFrame({ACCOUNT_ID: wanted, "as_of": pd.DatetimeIndex([as_of] * len(wanted))})
    contacts = account_contacts(leads, snapshots)
    p, raw = lead_model_scores(lead_model, leads, interactions, contacts)
    # Leave-one-out rows: snapshot n + i is contact i's account without contact i.
    n, snap = len(snapshots), contacts["snapshot"].to_numpy(dtype=np.int64)
    owner: list[NDArray[np.int64]] = [snap]
    member: list[NDArray[np.int64]] = [np.arange(len(contacts))]
    for i in range(len(contacts)):
        others = np.flatnonzero((snap == snap[i]) & (np.arange(len(contacts)) != i))
        owner.append(np.full(others.size, n + i, dtype=np.int64))
        member.append(others)
    pair_owner, pair_member = np.concatenate(owner), np.concatenate(member)
    all_snapshots = pd.concat([snapshots, snapshots.iloc[snap]], ignore_index=True)
    all_contacts = contacts.iloc[pair_member].reset_index(drop=True).assign(snapshot=pair_owner)
    rows = account_features(leads, interactions, all_snapshots, all_contacts, p[pair_member], raw[pair_member],
                            account_model.meta.company_categorical, account_model.meta.company_numeric)  # fmt: skip
    matrix = account_model.matrix(rows)
    probability = account_model.probability(matrix)
    roles = contact_roles(leads)
    role_of = dict(zip(leads["lead_id"].astype(str), roles, strict=True))
    out = []
    for s, account_id in enumerate(wanted):
        mine = np.flatnonzero(snap == s)
        if mine.size == 0:
            continue
        ranked = [
            ContactRank(str(contacts["lead_id"].iloc[i]), str(role_of[str(contacts["lead_id"].iloc[i])]), float(p[i]),
                        100.0 * float(probability[s] - probability[n + i]))
            for i in mine
        ]  # fmt: skip
        ranked.sort(key=lambda c: (-c.contribution, -c.probability, c.lead_id))
        out.append(AccountScore(account_id, as_of, float(probability[s]), account_model.tier(float(probability[s])),
                                account_model.reasons(matrix[s], top_k), ranked))  # fmt: skip
    return out


ACCOUNT_TABLE_COLUMNS: tuple[str, ...] = (
    "account_id", "as_of", "probability", "tier", "n_contacts", "call_first", "call_first_role", "top_reason", "model_version",
)  # fmt: skip


def account_scores_table(
    account_model: AccountModel, lead_model: ScoringModel, leads: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Every account of validated tables scored at `as_of`: the accounts file of `leadscore score`.

    Args:
        account_model: The bundle's account model.
        lead_model: The bundle's lead model.
        leads: Validated leads with `account_id`; the lead model's schema is applied as `score_table` applies it.
        interactions: Validated interactions.
        as_of: Scoring time (UTC).

    Returns:
        One row per account with a contact by `as_of`, by account id, with `ACCOUNT_TABLE_COLUMNS`
        (`call_first`: the contact with the largest contribution).
    """
    from model.scoring import schema_applied  # model.scoring imports the bundle module; imported where used

    leads, interactions = schema_applied(lead_model, leads, interactions)
    scored = score_accounts(account_model, lead_model, leads, interactions, as_of, top_k=1)
    return pd.DataFrame(
        [
            {
                "account_id": s.account_id, "as_of": s.as_of.isoformat(), "probability": round(s.probability, 6), "tier": s.tier,
                "n_contacts": len(s.contacts), "call_first": s.contacts[0].lead_id, "call_first_role": s.contacts[0].buying_role,
                "top_reason": s.reasons[0].label if s.reasons else None, "model_version": lead_model.meta.model_version,
            }  # fmt: skip
            for s in scored
        ],
        columns=list(ACCOUNT_TABLE_COLUMNS),
    )
