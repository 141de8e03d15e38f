"""The lead store: what the service knows of each lead, persisted (SQLAlchemy Core).

The service keeps here what events and CRMs tell it, so that a lead can be scored from its
stored history (`GET /leads/{lead_id}/score`) rather than resent whole with every request:

- `leads`: a lead's attributes (raw values, keyed by feature name where the model's lead schema
  knows the key, as sent otherwise), its creation time and its account;
- `interactions`: its interactions as sent (raw type, time, properties), unique per
  (lead, event id): a replayed event is a duplicate, never a second interaction;
- `processed_messages`: the ids of the event messages already applied (`POST /events`
  deduplicates on them, identify and group included);
- `lead_scores`: the last score of each lead, which decides whether a new one is an alert;
- `alert_outbox`: alerts to deliver, one row per (alert, target), written in the transaction
  that records the score, and drained by the service's delivery thread (`serving.alerts`).

Raw values are stored, not normalised ones: the served model's lead schema reads them when a
lead is scored, as it reads a `POST /score` body, so a model with another type map or other
missing tokens reads the same history its own way.

Late data is accepted: an interaction is stored whatever its time (a score as of a time sees
only what happened before it); an attribute, account or creation time sent with an older
observation time than the one stored is kept only where nothing newer was stored (last writer
wins by the time of the observation, not of its arrival).

Where: `LEADSCORE_LEAD_STORE` (a SQLAlchemy URL), else `sqlite:///<state dir>/leads.db`. SQLite
files are created 0600 (they hold personal data: ids that may be emails, attributes); SQLite runs
in WAL mode and every transaction takes the write lock first (`BEGIN IMMEDIATE`), so that
read-modify-write of a lead is serialised across threads and processes. The threads of one
process also queue on a lock of their own before `BEGIN IMMEDIATE`: SQLite's busy handler
sleeps and retries (1 ms, 2 ms, 5 ms, ... up to 100 ms), which leaves the database idle while
waiters sleep, and serves them in no order. A transaction that records what a client was
answered (events, scores, alerts queued) is synced to disk at commit (`synchronous=FULL`: on
disk across a power loss); the outbox's own bookkeeping (leases, deliveries made) is not
(`synchronous=NORMAL`: on disk across a crash of the process, lost at most in a power loss,
which only delivers an alert again). PostgreSQL locks the leads' rows (`SELECT ... FOR UPDATE`).
Other backends are refused.

Times are stored as UTC without a zone, which every SQL backend keeps as written.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from model.scoring import InteractionIn, LeadIn, ScoreOut
from model.settings import Settings, load_settings

LEAD_STORE_FILE = "leads.db"
MAX_ID_CHARS = 200
MAX_TYPE_CHARS = 100
MAX_ERROR_CHARS = 500
LOCK_TIMEOUT_S = 30.0  # as SQLite's busy timeout
CHANNEL = "channel"  # the key of an interaction's properties that holds its channel (`InteractionIn.channel`)
BACKENDS = ("sqlite", "postgresql")
SCORE_VALUES = ("probability", "score", "tier", "model_version", "as_of", "scored_at")  # of `lead_scores`, but its key

AttributeValue = str | int | float | bool | None
Interaction = tuple[str, str, datetime, Mapping[str, Any] | None]
"""(event id, type as sent, occurred at, properties or None) — what `add_interactions` takes."""


class LeadStoreError(RuntimeError):
    """The lead store cannot be opened, read or written; the message names the store."""


class UnknownLead(KeyError):
    """No lead with this id in the store."""

    def __init__(self, lead_id: str) -> None:
        self.lead_id = lead_id
        super().__init__(lead_id)

    def __str__(self) -> str:
        return f"no lead {self.lead_id!r} in the lead store"


@dataclass(frozen=True)
class StoredLead:
    """A lead as stored.

    Attributes:
        lead_id: The CRM's id.
        created_at: When it was created (UTC): declared by a client, else the earliest time it
            was seen (an event, or when it was first stored).
        created_at_declared: False while `created_at` is only the earliest time seen.
        account_id: Its account (Segment `group`), if any.
        attributes: Attribute -> raw value as sent.
    """

    lead_id: str
    created_at: datetime
    created_at_declared: bool
    account_id: str | None
    attributes: dict[str, AttributeValue]


@dataclass(frozen=True)
class StoredInteraction:
    """One stored interaction of a lead.

    Attributes:
        event_id: The id it was sent with (a Segment messageId, a CRM's event id).
        type: Its type as sent (the model's lead schema maps it when scoring).
        occurred_at: When it happened (UTC).
        properties: Its properties as sent; `CHANNEL` holds its channel.
    """

    event_id: str
    type: str
    occurred_at: datetime
    properties: dict[str, Any]

    @property
    def channel(self) -> str | None:
        value = self.properties.get(CHANNEL)
        return None if value is None else str(value)

    def numeric_properties(self) -> dict[str, AttributeValue]:
        """The properties but the channel: what `InteractionIn.properties` takes."""
        return {k: v for k, v in self.properties.items() if k != CHANNEL}


@dataclass(frozen=True)
class LeadUpdate:
    """What one observation tells of a lead (an identify, a group, a CRM record): `StoreSession.upsert_leads` takes them.

    Attributes:
        lead_id: The CRM's id.
        attributes: Attribute -> raw value; attributes not given keep their stored value.
        account_id: Its account; None keeps the stored one.
        created_at: Its declared creation time; None keeps the stored one.
        observed_at: When these values were true; None: now.
    """

    lead_id: str
    attributes: Mapping[str, AttributeValue]
    account_id: str | None = None
    created_at: datetime | None = None
    observed_at: datetime | None = None


@dataclass(frozen=True)
class InteractionCounts:
    """What `add_interactions` did: interactions stored, and those it already had (same event id)."""

    added: int
    duplicates: int


@dataclass(frozen=True)
class LastScore:
    """The last score the store recorded for a lead."""

    probability: float
    score: int
    tier: str
    model_version: str
    as_of: datetime


AlertKind = Literal["entered_hot", "score_jump"]


@dataclass(frozen=True)
class AlertPolicy:
    """When a new score is an alert, and where alerts go.

    Attributes:
        score_jump: A rise of the 0-100 score of at least this much since the last recorded
            score is an alert; 0: never.
        targets: Where each alert is delivered (e.g. "webhook:https://...", "hubspot"); no
            target: scores are recorded, no alert is queued.
    """

    score_jump: int = 0
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Alert:
    """An alert queued in the outbox (one row per target)."""

    alert_id: str
    lead_id: str
    kinds: tuple[AlertKind, ...]
    payload: dict[str, Any]


@dataclass(frozen=True)
class OutboxItem:
    """One delivery to make: an alert for one target.

    Attributes:
        id: The outbox row.
        alert_id: The alert's id, the same for all its targets (receivers deduplicate on it).
        lead_id: The lead.
        target: Where to deliver it.
        payload: The alert.
        attempts: Deliveries tried before this one.
        created_at: When the alert was queued (UTC).
    """

    id: int
    alert_id: str
    lead_id: str
    target: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    delivered: int
    dead: int


@dataclass
class _Tables:
    metadata: sa.MetaData = field(default_factory=sa.MetaData)

    def __post_init__(self) -> None:
        m = self.metadata
        lead_id = sa.String(MAX_ID_CHARS)
        self.leads = sa.Table(
            "leads", m,
            sa.Column("lead_id", lead_id, primary_key=True),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("created_at_declared", sa.Boolean, nullable=False),
            sa.Column("account_id", sa.String(MAX_ID_CHARS), nullable=True),
            sa.Column("account_at", sa.DateTime, nullable=True),
            # Attribute -> raw value; attribute -> ISO time of the observation that set it.
            sa.Column("attributes", sa.JSON, nullable=False),
            sa.Column("attributes_at", sa.JSON, nullable=False),
            sa.Column("updated_at", sa.DateTime, nullable=False),
        )  # fmt: skip
        self.interactions = sa.Table(
            "interactions", m,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("lead_id", lead_id, nullable=False),
            sa.Column("event_id", sa.String(MAX_ID_CHARS), nullable=False),
            sa.Column("type", sa.String(MAX_TYPE_CHARS), nullable=False),
            sa.Column("occurred_at", sa.DateTime, nullable=False),
            sa.Column("properties", sa.JSON, nullable=False),
            sa.UniqueConstraint("lead_id", "event_id", name="interactions_one_per_event"),
        )  # fmt: skip
        self.messages = sa.Table(
            "processed_messages", m,
            sa.Column("message_id", sa.String(MAX_ID_CHARS), primary_key=True),
            # NULL once the lead is forgotten: the id still stops a replay from storing it again.
            sa.Column("lead_id", lead_id, nullable=True, index=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("received_at", sa.DateTime, nullable=False),
        )  # fmt: skip
        self.scores = sa.Table(
            "lead_scores", m,
            sa.Column("lead_id", lead_id, primary_key=True),
            sa.Column("probability", sa.Float, nullable=False),
            sa.Column("score", sa.Integer, nullable=False),
            sa.Column("tier", sa.String(8), nullable=False),
            sa.Column("model_version", sa.String(100), nullable=False),
            sa.Column("as_of", sa.DateTime, nullable=False),
            sa.Column("scored_at", sa.DateTime, nullable=False),
        )  # fmt: skip
        self.outbox = sa.Table(
            "alert_outbox", m,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("alert_id", sa.String(36), nullable=False),
            sa.Column("lead_id", lead_id, nullable=False, index=True),
            sa.Column("target", sa.String(2048), nullable=False),
            sa.Column("payload", sa.JSON, nullable=False),
            sa.Column("created_at", sa.DateTime, nullable=False),
            sa.Column("status", sa.String(10), nullable=False),  # pending, delivered, dead
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_attempt_at", sa.DateTime, nullable=False),
            sa.Column("delivered_at", sa.DateTime, nullable=True),
            sa.Column("last_error", sa.String(MAX_ERROR_CHARS), nullable=True),
            sa.Index("alert_outbox_due", "status", "next_attempt_at"),
        )  # fmt: skip
        sa.Index("interactions_by_lead", self.interactions.c.lead_id, self.interactions.c.occurred_at)


def lead_store_url(settings: Settings | None = None) -> str:
    """`LEADSCORE_LEAD_STORE`, else the SQLite file `leads.db` of the state folder."""
    settings = settings or load_settings()
    if settings.lead_store is not None:
        return settings.lead_store
    return f"sqlite:///{(settings.state_dir / LEAD_STORE_FILE).resolve()}"


def open_lead_store(url: str | None = None, *, create: bool = True) -> LeadStore:
    """The lead store at `url` (default: `lead_store_url()`).

    Args:
        url: A SQLAlchemy URL (sqlite or postgresql).
        create: Create the SQLite file and the tables when missing (the service); tools that
            erase (`leadscore forget`) pass False, so that a mistyped URL is refused, not created.

    Raises:
        LeadStoreError: The store cannot be opened, or does not exist and `create` is False.
    """
    return LeadStore(url or lead_store_url(), create=create)


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _stamp(value: datetime) -> str:
    # One fixed width, so that stamps compare as text in time order.
    return _naive_utc(value).isoformat(timespec="microseconds")


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _checked_id(name: str, value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise ValueError(f"{name}: must be text of 1 to {MAX_ID_CHARS} characters")
    return value


class LeadStore:
    """The lead store (see the module's docstring). Thread-safe; one per process is enough.

    Every public method is one transaction; `session()` gives several operations one
    transaction (`POST /events` applies a batch, rescores the leads it touched and queues their
    alerts in one, so that an answered batch has its alerts queued).
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.tables = _Tables()
        try:
            parsed = sa.make_url(url)
        except ArgumentError as exc:
            raise LeadStoreError(f"lead store {url!r}: not a SQLAlchemy URL ({exc})") from None
        self.backend = parsed.get_backend_name()
        if self.backend not in BACKENDS:
            raise LeadStoreError(f"lead store {self.describe()}: backend {self.backend!r} is not supported (use {' or '.join(BACKENDS)})")
        # SQLite: the threads of this process take the write lock in turn (see the module's docstring).
        self._lock: threading.Lock | None = threading.Lock() if self.backend == "sqlite" else None
        # Built once: constructing an upsert costs more than running it.
        upsert = (postgresql.insert if self.backend == "postgresql" else sqlite.insert)(self.tables.scores)
        self.score_upsert = upsert.on_conflict_do_update(
            index_elements=["lead_id"], set_={name: upsert.excluded[name] for name in SCORE_VALUES}
        )
        try:
            if self.backend == "sqlite":
                self.engine = self._sqlite_engine(parsed, create, synchronous="FULL")
                self._bookkeeping_engine = self._sqlite_engine(parsed, create, synchronous="NORMAL")
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
                self._bookkeeping_engine = self.engine
            if not create:
                missing = [t for t in self.tables.metadata.tables if not sa.inspect(self.engine).has_table(t)]
                if missing:
                    raise LeadStoreError(f"lead store {self.describe()}: no such tables {missing}")
            self.tables.metadata.create_all(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            raise LeadStoreError(f"lead store {self.describe()}: cannot open: {exc.__class__.__name__}: {exc}") from exc

    def _sqlite_engine(self, parsed: sa.URL, create: bool, *, synchronous: Literal["FULL", "NORMAL"]) -> Engine:
        if parsed.database in (None, "", ":memory:"):
            raise LeadStoreError(f"lead store {self.describe()}: an in-memory SQLite store would be lost with the process: give a file")
        database = Path(parsed.database)
        if not create and not database.is_file():
            raise LeadStoreError(f"lead store {self.describe()}: no such database ({database} does not exist)")
        database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it (it would create it 0644); its WAL and shared-memory
        # files take the database file's mode.
        os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
        engine = sa.create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # The driver's own transaction handling off: `_begin` issues BEGIN IMMEDIATE.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def describe(self) -> str:
        try:
            return sa.make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            return "an unparsable URL"

    @contextmanager
    def session(self, *, synced: bool = True) -> Iterator[StoreSession]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Args:
            synced: Sync the commit to disk (SQLite `synchronous=FULL`), for what a client is
                answered; False for the outbox's bookkeeping, which a power loss may undo without
                losing an alert (see the module's docstring).

        Raises:
            LeadStoreError: The database failed (the transaction is rolled back), or this
                process's other threads held the store for `LOCK_TIMEOUT_S`.
        """
        if self._lock is not None and not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise LeadStoreError(f"lead store {self.describe()}: busy: another thread held it for {LOCK_TIMEOUT_S:g} s")
        try:
            with (self.engine if synced else self._bookkeeping_engine).begin() as connection:
                yield StoreSession(self, connection)
        except SQLAlchemyError as exc:
            raise LeadStoreError(f"lead store {self.describe()}: {exc.__class__.__name__}: {exc}") from exc
        finally:
            if self._lock is not None:
                self._lock.release()

    # -- one transaction each -------------------------------------------------------------
    def upsert_lead(
        self,
        lead_id: str,
        attributes: Mapping[str, AttributeValue],
        *,
        account_id: str | None = None,
        created_at: datetime | None = None,
        observed_at: datetime | None = None,
    ) -> bool:
        """`StoreSession.upsert_lead` in a transaction of its own."""
        with self.session() as s:
            return s.upsert_lead(lead_id, attributes, account_id=account_id, created_at=created_at, observed_at=observed_at)

    def add_interactions(self, lead_id: str, interactions: Sequence[Interaction]) -> InteractionCounts:
        """`StoreSession.add_interactions` in a transaction of its own."""
        with self.session() as s:
            return s.add_interactions(lead_id, interactions)

    def history(self, lead_id: str) -> tuple[StoredLead, list[StoredInteraction]]:
        """`StoreSession.history` in a transaction of its own."""
        with self.session() as s:
            return s.history(lead_id)

    def forget(self, lead_id: str) -> int:
        """`StoreSession.forget` in a transaction of its own."""
        with self.session() as s:
            return s.forget(lead_id)

    def record_score(self, lead_id: str, out: ScoreOut, policy: AlertPolicy) -> Alert | None:
        """`StoreSession.record_score` in a transaction of its own."""
        with self.session() as s:
            return s.record_score(lead_id, out, policy)

    # -- the outbox -----------------------------------------------------------------------
    def claim_due(self, limit: int, lease: timedelta, now: datetime | None = None) -> list[OutboxItem]:
        """Pending deliveries due now, oldest first, leased for `lease` (another drainer skips them meanwhile).

        A delivery whose drainer dies is due again when its lease ends: at least once.
        """
        now = _naive_utc(now or datetime.now(UTC))
        t = self.tables.outbox
        with self.session(synced=False) as s:
            query = (
                sa.select(t).where(t.c.status == "pending", t.c.next_attempt_at <= now).order_by(t.c.id).limit(limit)
            )
            if self.backend == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(s.connection.execute(query).mappings())
            if rows:
                s.connection.execute(
                    t.update().where(t.c.id.in_([r["id"] for r in rows])).values(next_attempt_at=now + lease)
                )
        return [
            OutboxItem(
                id=r["id"], alert_id=r["alert_id"], lead_id=r["lead_id"], target=r["target"],
                payload=dict(r["payload"]), attempts=r["attempts"], created_at=_aware(r["created_at"]),
            )
            for r in rows
        ]  # fmt: skip

    def mark_delivered(self, ids: Sequence[int], now: datetime | None = None) -> None:
        self.settle(ids, [], now)

    def mark_failed(self, ids: Sequence[int], error: str, retry_at: datetime | None) -> None:
        """Record a failed attempt: due again at `retry_at`, or given up on (`dead`) when None."""
        self.settle([], [(ids, error, retry_at)])

    def settle(
        self,
        delivered: Sequence[int],
        failed: Sequence[tuple[Sequence[int], str, datetime | None]],
        now: datetime | None = None,
    ) -> None:
        """Record how deliveries went, in one transaction: those delivered, and each failure as
        (rows, error, due again at, or None: given up on, `dead`)."""
        t = self.tables.outbox
        with self.session(synced=False) as s:
            if delivered:
                s.connection.execute(
                    t.update().where(t.c.id.in_(list(delivered))).values(
                        status="delivered", delivered_at=_naive_utc(now or datetime.now(UTC)), attempts=t.c.attempts + 1
                    )
                )
            for ids, error, retry_at in failed:
                values: dict[str, Any] = {"attempts": t.c.attempts + 1, "last_error": error[:MAX_ERROR_CHARS]}
                if retry_at is None:
                    values["status"] = "dead"
                else:
                    values["next_attempt_at"] = _naive_utc(retry_at)
                s.connection.execute(t.update().where(t.c.id.in_(list(ids))).values(**values))

    def outbox_counts(self) -> OutboxCounts:
        t = self.tables.outbox
        with self.session(synced=False) as s:
            rows = s.connection.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status)).all()
        found: dict[str, int] = {str(status): int(n) for status, n in rows}
        return OutboxCounts(found.get("pending", 0), found.get("delivered", 0), found.get("dead", 0))

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (UTC), or None when none is pending."""
        t = self.tables.outbox
        with self.session(synced=False) as s:
            found = s.connection.execute(sa.select(sa.func.min(t.c.next_attempt_at)).where(t.c.status == "pending")).scalar()
        return None if found is None else _aware(found)


def alert_kinds(previous: LastScore | None, out: ScoreOut, policy: AlertPolicy) -> list[AlertKind]:
    """Why a new score is an alert: the lead enters `hot` (its last score was not hot, or there
    was none), or its score rose by `policy.score_jump` or more since the last one. Empty: no alert."""
    kinds: list[AlertKind] = []
    if out.tier == "hot" and (previous is None or previous.tier != "hot"):
        kinds.append("entered_hot")
    if previous is not None and policy.score_jump > 0 and out.score - previous.score >= policy.score_jump:
        kinds.append("score_jump")
    return kinds


def _merge(row: dict[str, Any], update: LeadUpdate, now: datetime) -> None:
    """Merge an observation into a lead's row (a dict of `StoreSession._locked_leads`), in place:
    each value is kept from the latest observation of it; a declared creation time replaces the
    stored one, an earlier observation lowers one not declared."""
    at = update.observed_at or now
    stamp = _stamp(at)
    merged, merged_at = row["attributes"], row["attributes_at"]
    for name, value in update.attributes.items():
        if merged_at.get(name, "") <= stamp:
            merged[name], merged_at[name] = _json_safe(value), stamp
    if update.account_id is not None and (row["account_at"] is None or row["account_at"] <= _naive_utc(at)):
        row["account_id"], row["account_at"] = update.account_id, _naive_utc(at)
    if update.created_at is not None:
        row["created_at"], row["created_at_declared"] = _naive_utc(update.created_at), True
    elif not row["created_at_declared"] and _naive_utc(at) < row["created_at"]:
        row["created_at"] = _naive_utc(at)
    row["updated_at"] = _naive_utc(now)


def _alert(lead_id: str, out: ScoreOut, previous: LastScore | None, kinds: list[AlertKind], now: datetime) -> Alert:
    top = (out.reasons or {}).get("up") or []
    alert_id = str(uuid.uuid4())
    return Alert(
        alert_id=alert_id,
        lead_id=lead_id,
        kinds=tuple(kinds),
        payload={
            "alert_id": alert_id,
            "kinds": kinds,
            "lead_id": lead_id,
            "score": out.score,
            "previous_score": None if previous is None else previous.score,
            "tier": out.tier,
            "previous_tier": None if previous is None else previous.tier,
            "probability": out.probability,
            "model_version": out.model_version,
            "as_of": out.as_of.astimezone(UTC).isoformat(),
            "alerted_at": now.isoformat(),
            "top_reason": top[0].label if top else None,
        },
    )


def stored_lead_in(lead: StoredLead, interactions: Sequence[StoredInteraction]) -> LeadIn:
    """A stored lead as the request a CRM would send with its whole history (`model.scoring.LeadIn`).

    Built without validation: every value was validated when it was stored, and the
    request limits (5,000 interactions) bound a request, not a lead's history.
    """
    return LeadIn.model_construct(
        lead_id=lead.lead_id,
        created_at=lead.created_at,
        attributes=dict(lead.attributes),
        interactions=[
            InteractionIn.model_construct(
                type=i.type, occurred_at=i.occurred_at, channel=i.channel, properties=i.numeric_properties() or None
            )
            for i in interactions
        ],
    )


class StoreSession:
    """The store's operations inside one transaction (`LeadStore.session`)."""

    def __init__(self, store: LeadStore, connection: Connection) -> None:
        self.store = store
        self.connection = connection
        self.t = store.tables

    def _insert(self, table: sa.Table) -> Any:
        # INSERT ... ON CONFLICT DO NOTHING, in the backend's dialect.
        return (postgresql.insert if self.store.backend == "postgresql" else sqlite.insert)(table)

    def _locked_leads(self, lead_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The rows of these leads (those stored), locked, as dicts to merge into (`_write_leads`)."""
        leads = self.t.leads
        # In one order, so that two transactions locking overlapping leads cannot deadlock.
        query = sa.select(leads).where(leads.c.lead_id.in_(sorted(set(lead_ids)))).order_by(leads.c.lead_id)
        if self.store.backend == "postgresql":
            query = query.with_for_update()
        return {
            r["lead_id"]: {**r, "attributes": dict(r["attributes"]), "attributes_at": dict(r["attributes_at"])}
            for r in self.connection.execute(query).mappings()
        }

    def _ensure_leads(
        self, first_seen: Mapping[str, tuple[datetime, datetime | None]]
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The leads' rows, locked; those missing inserted first (empty, created at their declared
        creation time, else when first seen).

        Args:
            first_seen: Lead id -> (when first seen, declared creation time or None).

        Returns:
            (lead id -> its row as a dict, the ids that were inserted).
        """
        now = datetime.now(UTC).replace(tzinfo=None)
        leads = self.t.leads
        rows: list[dict[str, Any]] = [
            {"lead_id": lead_id, "created_at": _naive_utc(created_at or seen), "created_at_declared": created_at is not None,
             "account_id": None, "account_at": None, "attributes": {}, "attributes_at": {}, "updated_at": now}
            for lead_id, (seen, created_at) in first_seen.items()
        ]  # fmt: skip
        statement = self._insert(leads).on_conflict_do_nothing(index_elements=["lead_id"]).returning(leads.c.lead_id)
        inserted = {row[0] for row in self.connection.execute(statement, rows)}
        found = self._locked_leads(list(first_seen))
        assert len(found) == len(first_seen)  # inserted or already there, in this transaction
        return found, inserted

    def _write_leads(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write back rows of `_locked_leads` changed in place (one statement for all)."""
        if not rows:
            return
        leads = self.t.leads
        changing = ("created_at", "created_at_declared", "account_id", "account_at", "attributes", "attributes_at", "updated_at")
        self.connection.execute(
            leads.update().where(leads.c.lead_id == sa.bindparam("b_lead_id")),
            [{"b_lead_id": row["lead_id"], **{name: row[name] for name in changing}} for row in rows],
        )

    def has_message(self, message_id: str) -> bool:
        m = self.t.messages
        return self.connection.execute(sa.select(m.c.message_id).where(m.c.message_id == message_id)).first() is not None

    def claim_messages(self, messages: Sequence[tuple[str, str, str]]) -> set[str]:
        """Record message ids as processed; returns those that were new (the others are duplicates).

        Args:
            messages: (message id, lead id, kind) triples, ids distinct.
        """
        if not messages:
            return set()
        now = datetime.now(UTC).replace(tzinfo=None)
        m = self.t.messages
        # One statement for all rows (executemany: compiled once, cached), RETURNING the new ones.
        statement = self._insert(m).on_conflict_do_nothing(index_elements=["message_id"]).returning(m.c.message_id)
        rows = [{"message_id": i, "lead_id": lead, "kind": kind, "received_at": now} for i, lead, kind in messages]
        return {row[0] for row in self.connection.execute(statement, rows)}

    def upsert_lead(
        self,
        lead_id: str,
        attributes: Mapping[str, AttributeValue],
        *,
        account_id: str | None = None,
        created_at: datetime | None = None,
        observed_at: datetime | None = None,
    ) -> bool:
        """Store a lead's attributes, account and creation time, merged into what is stored.

        Args:
            lead_id: The CRM's id.
            attributes: Attribute -> raw value; attributes not given keep their stored value.
            account_id: Its account; None keeps the stored one.
            created_at: Its declared creation time; None keeps the stored one (a new lead is
                created at `observed_at` until one is declared).
            observed_at: When these values were true (an identify's timestamp); a value stored
                from a later observation is kept. Default: now.

        Returns:
            True when the lead was new.
        """
        update = LeadUpdate(lead_id, attributes, account_id=account_id, created_at=created_at, observed_at=observed_at)
        return lead_id in self.upsert_leads([update])

    def upsert_leads(self, updates: Sequence[LeadUpdate]) -> set[str]:
        """`upsert_lead` for many updates, applied in order, in three statements whatever their number.

        Returns:
            The ids of the leads that were new.
        """
        now = datetime.now(UTC)
        first_seen: dict[str, tuple[datetime, datetime | None]] = {}
        for update in updates:
            _checked_id("lead_id", update.lead_id)
            if update.account_id is not None:
                _checked_id("account_id", update.account_id)
            first_seen.setdefault(update.lead_id, (update.observed_at or now, update.created_at))
        if not first_seen:
            return set()
        rows, inserted = self._ensure_leads(first_seen)
        for update in updates:
            _merge(rows[update.lead_id], update, now)
        self._write_leads([rows[lead_id] for lead_id in first_seen])
        return inserted

    def add_interactions(self, lead_id: str, interactions: Sequence[Interaction]) -> InteractionCounts:
        """Store interactions of a lead (created when unknown); an event id it already has is a duplicate.

        An interaction earlier than the lead's creation time lowers it while no creation time
        was declared (the lead existed when it was first seen).

        Args:
            lead_id: The CRM's id.
            interactions: (event id, type as sent, occurred at, properties or None) tuples.
        """
        return self.add_interactions_of({lead_id: interactions})[lead_id]

    def add_interactions_of(self, interactions: Mapping[str, Sequence[Interaction]]) -> dict[str, InteractionCounts]:
        """`add_interactions` for many leads (lead id -> its interactions), in four statements at most."""
        sent: dict[str, int] = {}
        distinct: dict[str, list[dict[str, Any]]] = {}
        for lead_id, of_lead in interactions.items():
            _checked_id("lead_id", lead_id)
            rows: list[dict[str, Any]] = []
            for event_id, event_type, occurred_at, properties in of_lead:
                _checked_id("event_id", event_id)
                if not isinstance(event_type, str) or not event_type.strip() or len(event_type) > MAX_TYPE_CHARS:
                    raise ValueError(f"interaction {event_id!r}: type must be text of 1 to {MAX_TYPE_CHARS} characters")
                rows.append({
                    "lead_id": lead_id, "event_id": event_id, "type": event_type, "occurred_at": _naive_utc(occurred_at),
                    "properties": {k: _json_safe(v) for k, v in (properties or {}).items()},
                })  # fmt: skip
            sent[lead_id] = len(rows)
            if rows:
                distinct[lead_id] = list({r["event_id"]: r for r in rows}.values())
        if not distinct:
            return {lead_id: InteractionCounts(0, 0) for lead_id in sent}
        earliest = {lead_id: min(r["occurred_at"] for r in rows) for lead_id, rows in distinct.items()}
        leads, _ = self._ensure_leads({lead_id: (_aware(at), None) for lead_id, at in earliest.items()})
        i = self.t.interactions
        statement = self._insert(i).on_conflict_do_nothing(index_elements=["lead_id", "event_id"]).returning(i.c.lead_id)
        added = Counter(row[0] for row in self.connection.execute(statement, [r for rows in distinct.values() for r in rows]))
        lowered = []
        for lead_id, at in earliest.items():
            row = leads[lead_id]
            if added[lead_id] and not row["created_at_declared"] and at < row["created_at"]:
                row["created_at"] = at
                lowered.append(row)
        self._write_leads(lowered)
        return {lead_id: InteractionCounts(added=added[lead_id], duplicates=n - added[lead_id]) for lead_id, n in sent.items()}

    def history(self, lead_id: str) -> tuple[StoredLead, list[StoredInteraction]]:
        """A lead and its interactions in time order (then in the order they were stored).

        Raises:
            UnknownLead: No such lead.
        """
        found = self.histories([lead_id])
        if lead_id not in found:
            raise UnknownLead(lead_id)
        return found[lead_id]

    def histories(self, lead_ids: Sequence[str]) -> dict[str, tuple[StoredLead, list[StoredInteraction]]]:
        """`history` of many leads, in two queries: lead id -> (lead, interactions); a lead not stored is left out."""
        wanted = sorted(set(lead_ids))
        if not wanted:
            return {}
        leads = self.t.leads
        rows = self.connection.execute(sa.select(leads).where(leads.c.lead_id.in_(wanted))).mappings()
        found: dict[str, tuple[StoredLead, list[StoredInteraction]]] = {
            row["lead_id"]: (
                StoredLead(
                    lead_id=row["lead_id"],
                    created_at=_aware(row["created_at"]),
                    created_at_declared=bool(row["created_at_declared"]),
                    account_id=row["account_id"],
                    attributes=dict(row["attributes"]),
                ),
                [],
            )
            for row in rows
        }
        i = self.t.interactions
        events = self.connection.execute(
            sa.select(i.c.lead_id, i.c.event_id, i.c.type, i.c.occurred_at, i.c.properties)
            .where(i.c.lead_id.in_(wanted))
            .order_by(i.c.occurred_at, i.c.id)
        )
        for e in events:
            found[e.lead_id][1].append(StoredInteraction(e.event_id, e.type, _aware(e.occurred_at), dict(e.properties)))
        return found

    def last_score(self, lead_id: str) -> LastScore | None:
        return self.last_scores([lead_id]).get(lead_id)

    def last_scores(self, lead_ids: Sequence[str]) -> dict[str, LastScore]:
        """The last recorded score of each of these leads that has one."""
        wanted = sorted(set(lead_ids))
        if not wanted:
            return {}
        s = self.t.scores
        rows = self.connection.execute(sa.select(s).where(s.c.lead_id.in_(wanted))).mappings()
        return {
            row["lead_id"]: LastScore(row["probability"], row["score"], row["tier"], row["model_version"], _aware(row["as_of"]))
            for row in rows
        }

    def record_score(self, lead_id: str, out: ScoreOut, policy: AlertPolicy) -> Alert | None:
        """Record a lead's new score; queue an alert for every target when it is one.

        A score is an alert when the lead enters `hot` (its last recorded score was not hot, or
        there was none) or rises by `policy.score_jump` points or more since the last recorded one.

        Returns:
            The alert queued, or None.
        """
        return self.record_scores({lead_id: out}, policy).get(lead_id)

    def record_scores(
        self, scores: Mapping[str, ScoreOut], policy: AlertPolicy, previous: Mapping[str, LastScore] | None = None
    ) -> dict[str, Alert]:
        """`record_score` for many leads (lead id -> new score), in three statements at most.

        Args:
            scores: Lead id -> its new score.
            policy: When a score is an alert, and where it goes.
            previous: The leads' last recorded scores (`last_scores`), when the caller read them in
                this transaction; read here when None.

        Returns:
            Lead id -> the alert queued, for the leads whose score is one.
        """
        if not scores:
            return {}
        if previous is None:
            previous = self.last_scores(list(scores))
        now = datetime.now(UTC)
        self.connection.execute(
            self.store.score_upsert,
            [
                {"lead_id": lead_id, "probability": out.probability, "score": out.score, "tier": out.tier,
                 "model_version": out.model_version, "as_of": _naive_utc(out.as_of), "scored_at": _naive_utc(now)}
                for lead_id, out in scores.items()
            ],
        )  # fmt: skip
        if not policy.targets:
            return {}
        alerts: dict[str, Alert] = {}
        for lead_id, out in scores.items():
            kinds = alert_kinds(previous.get(lead_id), out, policy)
            if kinds:
                alerts[lead_id] = _alert(lead_id, out, previous.get(lead_id), kinds, now)
        naive_now = _naive_utc(now)
        if alerts:
            self.connection.execute(
                self.t.outbox.insert(),
                [
                    {
                        "alert_id": alert.alert_id, "lead_id": alert.lead_id, "target": target, "payload": alert.payload,
                        "created_at": naive_now, "status": "pending", "attempts": 0, "next_attempt_at": naive_now,
                        "delivered_at": None, "last_error": None,
                    }
                    for alert in alerts.values()
                    for target in policy.targets
                ],
            )  # fmt: skip
        return alerts

    def forget(self, lead_id: str) -> int:
        """Erase a lead: its row, interactions, last score and queued alerts; returns the rows deleted.

        The ids of the event messages it was sent in are kept without the lead, so that a
        replay of them (a pipeline retrying) cannot store the lead again.
        """
        deleted = 0
        for table in (self.t.interactions, self.t.scores, self.t.outbox, self.t.leads):
            deleted += self.connection.execute(table.delete().where(table.c.lead_id == lead_id)).rowcount
        m = self.t.messages
        self.connection.execute(m.update().where(m.c.lead_id == lead_id).values(lead_id=None))
        return int(deleted)
