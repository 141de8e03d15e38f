"""`GET /accounts/{account_id}`: an account of the lead store scored by the bundle's account model.

The account's contacts are the stored leads whose account (a Segment `group` call, or a CRM
record) is `account_id`; each is read by the lead model's schema as `GET /leads/{id}/score` reads
it (`model.scoring.read_lead`), and the account is scored from those histories at `as_of` by
`model.accounts.score_accounts`: probability, tier, top reasons, and the contacts ranked by how
much the account's probability falls without each (whom to call first).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import sqlalchemy as sa
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.accounts import ACCOUNT_ID
from model.accounts import AccountModel, AccountScore, load_account_model, score_accounts
from model.bundle import ScoringModel
from model.leadstore import LeadStore, stored_lead_in
from model.scoring import LeadRead, LeadRejected, not_in_the_future, read_lead
from serving.schemas import ErrorBody

MAX_ACCOUNT_CONTACTS = 500  # a buying group, not a customer base: beyond this the request is refused


class AccountQuery(BaseModel):
    """Query of `GET /accounts/{account_id}`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    as_of: datetime | None = Field(default=None, description="Score the account as it was at this time (ISO 8601); now when omitted.")
    top_k: Annotated[int, Field(ge=1, le=10)] = Field(default=3, description="How many reasons.")

    @field_validator("as_of")
    @classmethod
    def _not_in_the_future(cls, value: datetime | None) -> datetime | None:
        return None if value is None else not_in_the_future(value)


class AccountReasonOut(BaseModel):
    feature: str = Field(description="The account feature")
    label: str = Field(description="What it means")
    value: float | str | None = Field(description="Its value for this account")
    contribution: float = Field(description="Probability points it adds (negative: takes away)")


class AccountContactOut(BaseModel):
    lead_id: str
    buying_role: str = Field(description="decision_maker, champion, technical, user or unknown")
    probability: float = Field(description="The contact's own lead probability")
    contribution: float = Field(description="Account probability points lost without this contact: whom to call first")


class AccountScoreOut(BaseModel):
    account_id: str
    as_of: datetime
    probability: float = Field(description="P(the account converts within horizon_days)")
    tier: str
    horizon_days: float
    model_version: str = Field(description="The bundle's lead model version (the account model is part of the bundle)")
    reasons: list[AccountReasonOut]
    contacts: list[AccountContactOut] = Field(description="Contacts known at as_of, ranked by contribution")


ACCOUNT_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No contact of this account in the lead store, or the bundle has no account model"},
}


def not_found(kind: str, msg: str, loc: list[str | int]) -> JSONResponse:
    return JSONResponse({"error": "Not Found", "detail": [{"type": kind, "loc": loc, "msg": msg}]}, status_code=404)


class AccountModels:
    """The served bundle's account model, loaded once per bundle folder and model version."""

    def __init__(self) -> None:
        self._key: tuple[Path, str] | None = None
        self._model: AccountModel | None = None

    def of(self, bundle_dir: Path, model: ScoringModel) -> AccountModel | None:
        key = (bundle_dir, model.meta.model_version)
        if self._key != key:
            self._model, self._key = load_account_model(bundle_dir), key
        return self._model


def account_reads(store: LeadStore, lead_model: ScoringModel, account_id: str, as_of: datetime) -> list[LeadRead] | None:
    """The stored contacts of an account, read by the lead model's schema; None when it has none.

    Raises:
        LeadRejected: The account has more than `MAX_ACCOUNT_CONTACTS` contacts, or a contact's
            history cannot be read.
    """
    with store.session() as session:
        leads = session.t.leads
        ids = [r[0] for r in session.connection.execute(sa.select(leads.c.lead_id).where(leads.c.account_id == account_id))]
        if not ids:
            return None
        if len(ids) > MAX_ACCOUNT_CONTACTS:
            raise LeadRejected("account_id", f"has {len(ids)} contacts in the lead store; at most {MAX_ACCOUNT_CONTACTS} are scored as one buying group")
        histories = session.histories(ids)
    # A contact created after as_of is not yet part of the account; one created "now" is.
    reads = []
    for lead, interactions in histories.values():
        if lead.created_at <= as_of:
            reads.append(read_lead(lead_model, stored_lead_in(lead, interactions), as_of))
    return reads


def reads_as_tables(reads: list[LeadRead], account_id: str, attribute_columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leads and interactions tables of read contacts, as `score_accounts` takes them."""
    leads = pd.DataFrame({
        "lead_id": [r.lead_id for r in reads],
        "created_at": pd.to_datetime([r.created_s for r in reads], unit="s", utc=True),
        ACCOUNT_ID: account_id,
        **{c: pd.Series([r.attributes.get(c) for r in reads], dtype=object) for c in attribute_columns},
    })  # fmt: skip
    events = pd.DataFrame({
        "lead_id": [r.lead_id for r in reads for _t in r.times],
        "occurred_at": pd.to_datetime([t for r in reads for t in r.times], unit="s", utc=True),
        "type": [t for r in reads for t in r.types],
    })  # fmt: skip
    return leads, events


def score_stored_account(
    store: LeadStore, lead_model: ScoringModel, account_model: AccountModel, account_id: str, query: AccountQuery
) -> AccountScoreOut | None:
    """The account scored from its stored contacts; None when the store has no contact of it by `as_of`."""
    as_of = query.as_of.astimezone(UTC) if query.as_of is not None else datetime.now(UTC)
    reads = account_reads(store, lead_model, account_id, as_of)
    if not reads:
        return None
    leads, events = reads_as_tables(reads, account_id, lead_model.spec.attribute_columns())
    scored = score_accounts(account_model, lead_model, leads, events, pd.Timestamp(as_of), [account_id], top_k=query.top_k)
    return account_out(scored[0], account_model, lead_model) if scored else None


def account_out(scored: AccountScore, account_model: AccountModel, lead_model: ScoringModel) -> AccountScoreOut:
    return AccountScoreOut(
        account_id=scored.account_id,
        as_of=scored.as_of.to_pydatetime(),
        probability=round(scored.probability, 6),
        tier=scored.tier,
        horizon_days=account_model.meta.horizon_days,
        model_version=lead_model.meta.model_version,
        reasons=[AccountReasonOut(feature=r.feature, label=r.label, value=r.value, contribution=round(r.contribution, 3)) for r in scored.reasons],
        contacts=[
            AccountContactOut(lead_id=c.lead_id, buying_role=c.buying_role, probability=round(c.probability, 6), contribution=round(c.contribution, 3))
            for c in scored.contacts
        ],
    )
