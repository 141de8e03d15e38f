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
read-modify-write of a lead is serialised across threads and processes. PostgreSQL locks the
lead's row (`SELECT ... FOR UPDATE`). Other backends are refused.

Times are stored as UTC without a zone, which every SQL backend keeps as written.
"""

from __future__ import annotations

import math
import os
import uuid
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
CHANNEL = "channel"  # the key of an interaction's properties that holds its channel (`InteractionIn.channel`)
BACKENDS = ("sqlite", "postgresql")

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
        try:
            if self.backend == "sqlite":
                self.engine = self._sqlite_engine(parsed, create)
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
            if not create:
                missing = [t for t in self.tables.metadata.tables if not sa.inspect(self.engine).has_table(t)]
                if missing:
                    raise LeadStoreError(f"lead store {self.describe()}: no such tables {missing}")
            self.tables.metadata.create_all(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            raise LeadStoreError(f"lead store {self.describe()}: cannot open: {exc.__class__.__name__}: {exc}") from exc

    def _sqlite_engine(self, parsed: sa.URL, create: bool) -> Engine:
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
            cursor.execute("PRAGMA synchronous=FULL")  # a 202 means on disk
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
    def session(self) -> Iterator[StoreSession]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Raises:
            LeadStoreError: The database failed (the transaction is rolled back).
        """
        try:
            with self.engine.begin() as connection:
                yield StoreSession(self, connection)
        except SQLAlchemyError as exc:
            raise LeadStoreError(f"lead store {self.describe()}: {exc.__class__.__name__}: {exc}") from exc

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
        with self.session() as s:
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
        t = self.tables.outbox
        with self.session() as s:
            s.connection.execute(
                t.update().where(t.c.id.in_(list(ids))).values(
                    status="delivered", delivered_at=_naive_utc(now or datetime.now(UTC)), attempts=t.c.attempts + 1
                )
            )

    def mark_failed(self, ids: Sequence[int], error: str, retry_at: datetime | None) -> None:
        """Record a failed attempt: due again at `retry_at`, or given up on (`dead`) when None."""
        t = self.tables.outbox
        values: dict[str, Any] = {"attempts": t.c.attempts + 1, "last_error": error[:MAX_ERROR_CHARS]}
        if retry_at is None:
            values["status"] = "dead"
        else:
            values["next_attempt_at"] = _naive_utc(retry_at)
        with self.session() as s:
            s.connection.execute(t.update().where(t.c.id.in_(list(ids))).values(**values))

    def outbox_counts(self) -> OutboxCounts:
        t = self.tables.outbox
        with self.session() as s:
            rows = s.connection.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status)).all()
        found: dict[str, int] = {str(status): int(n) for status, n in rows}
        return OutboxCounts(found.get("pending", 0), found.get("delivered", 0), found.get("dead", 0))

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (UTC), or None when none is pending."""
        t = self.tables.outbox
        with self.session() as s:
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

    def _locked_lead(self, lead_id: str) -> sa.RowMapping | None:
        leads = self.t.leads
        query = sa.select(leads).where(leads.c.lead_id == lead_id)
        if self.store.backend == "postgresql":
            query = query.with_for_update()
        return self.connection.execute(query).mappings().first()

    def _ensure_lead(self, lead_id: str, first_seen: datetime, created_at: datetime | None) -> sa.RowMapping:
        """The lead's row, locked; inserted (empty, created at `created_at` or `first_seen`) when missing."""
        now = datetime.now(UTC).replace(tzinfo=None)
        self.connection.execute(
            self._insert(self.t.leads)
            .values(
                lead_id=lead_id,
                created_at=_naive_utc(created_at or first_seen),
                created_at_declared=created_at is not None,
                account_id=None,
                account_at=None,
                attributes={},
                attributes_at={},
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["lead_id"])
        )
        row = self._locked_lead(lead_id)
        assert row is not None  # inserted or already there, in this transaction
        return row

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
        _checked_id("lead_id", lead_id)
        if account_id is not None:
            _checked_id("account_id", account_id)
        at = observed_at or datetime.now(UTC)
        existed = self._locked_lead(lead_id) is not None
        row = self._ensure_lead(lead_id, at, created_at)
        stamp = _stamp(at)
        values: dict[str, Any] = {"updated_at": datetime.now(UTC).replace(tzinfo=None)}
        if attributes:
            merged, merged_at = dict(row["attributes"]), dict(row["attributes_at"])
            for name, value in attributes.items():
                if merged_at.get(name, "") <= stamp:
                    merged[name], merged_at[name] = _json_safe(value), stamp
            values["attributes"], values["attributes_at"] = merged, merged_at
        if account_id is not None and (row["account_at"] is None or row["account_at"] <= _naive_utc(at)):
            values["account_id"], values["account_at"] = account_id, _naive_utc(at)
        if created_at is not None:
            values["created_at"], values["created_at_declared"] = _naive_utc(created_at), True
        elif not row["created_at_declared"] and _naive_utc(at) < row["created_at"]:
            values["created_at"] = _naive_utc(at)
        leads = self.t.leads
        self.connection.execute(leads.update().where(leads.c.lead_id == lead_id).values(**values))
        return not existed

    def add_interactions(self, lead_id: str, interactions: Sequence[Interaction]) -> InteractionCounts:
        """Store interactions of a lead (created when unknown); an event id it already has is a duplicate.

        An interaction earlier than the lead's creation time lowers it while no creation time
        was declared (the lead existed when it was first seen).

        Args:
            lead_id: The CRM's id.
            interactions: (event id, type as sent, occurred at, properties or None) tuples.
        """
        _checked_id("lead_id", lead_id)
        rows: list[dict[str, Any]] = []
        for event_id, event_type, occurred_at, properties in interactions:
            _checked_id("event_id", event_id)
            if not isinstance(event_type, str) or not event_type.strip() or len(event_type) > MAX_TYPE_CHARS:
                raise ValueError(f"interaction {event_id!r}: type must be text of 1 to {MAX_TYPE_CHARS} characters")
            rows.append({
                "lead_id": lead_id, "event_id": event_id, "type": event_type, "occurred_at": _naive_utc(occurred_at),
                "properties": {k: _json_safe(v) for k, v in (properties or {}).items()},
            })  # fmt: skip
        if not rows:
            return InteractionCounts(0, 0)
        distinct = list({r["event_id"]: r for r in rows}.values())
        earliest: datetime = min(r["occurred_at"] for r in distinct)
        row = self._ensure_lead(lead_id, _aware(earliest), None)
        i = self.t.interactions
        statement = self._insert(i).on_conflict_do_nothing(index_elements=["lead_id", "event_id"]).returning(i.c.id)
        added = len(self.connection.execute(statement, distinct).all())
        if added and not row["created_at_declared"] and earliest < row["created_at"]:
            leads = self.t.leads
            self.connection.execute(leads.update().where(leads.c.lead_id == lead_id).values(created_at=earliest))
        return InteractionCounts(added=added, duplicates=len(rows) - added)

    def history(self, lead_id: str) -> tuple[StoredLead, list[StoredInteraction]]:
        """A lead and its interactions in time order (then in the order they were stored).

        Raises:
            UnknownLead: No such lead.
        """
        row = self.connection.execute(sa.select(self.t.leads).where(self.t.leads.c.lead_id == lead_id)).mappings().first()
        if row is None:
            raise UnknownLead(lead_id)
        i = self.t.interactions
        events = self.connection.execute(
            sa.select(i.c.event_id, i.c.type, i.c.occurred_at, i.c.properties)
            .where(i.c.lead_id == lead_id)
            .order_by(i.c.occurred_at, i.c.id)
        ).all()
        lead = StoredLead(
            lead_id=row["lead_id"],
            created_at=_aware(row["created_at"]),
            created_at_declared=bool(row["created_at_declared"]),
            account_id=row["account_id"],
            attributes=dict(row["attributes"]),
        )
        return lead, [StoredInteraction(e.event_id, e.type, _aware(e.occurred_at), dict(e.properties)) for e in events]

    def last_score(self, lead_id: str) -> LastScore | None:
        s = self.t.scores
        row = self.connection.execute(sa.select(s).where(s.c.lead_id == lead_id)).mappings().first()
        if row is None:
            return None
        return LastScore(row["probability"], row["score"], row["tier"], row["model_version"], _aware(row["as_of"]))

    def record_score(self, lead_id: str, out: ScoreOut, policy: AlertPolicy) -> Alert | None:
        """Record a lead's new score; queue an alert for every target when it is one.

        A score is an alert when the lead enters `hot` (its last recorded score was not hot, or
        there was none) or rises by `policy.score_jump` points or more since the last recorded one.

        Returns:
            The alert queued, or None.
        """
        previous = self.last_score(lead_id)
        kinds = alert_kinds(previous, out, policy)
        now = datetime.now(UTC)
        values = {
            "probability": out.probability, "score": out.score, "tier": out.tier,
            "model_version": out.model_version, "as_of": _naive_utc(out.as_of), "scored_at": _naive_utc(now),
        }  # fmt: skip
        s = self.t.scores
        if previous is None:
            self.connection.execute(s.insert().values(lead_id=lead_id, **values))
        else:
            self.connection.execute(s.update().where(s.c.lead_id == lead_id).values(**values))
        if not kinds or not policy.targets:
            return None
        top = (out.reasons or {}).get("up") or []
        alert_id = str(uuid.uuid4())
        alert = Alert(
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
        naive_now = _naive_utc(now)
        self.connection.execute(
            self.t.outbox.insert(),
            [
                {
                    "alert_id": alert.alert_id, "lead_id": lead_id, "target": target, "payload": alert.payload,
                    "created_at": naive_now, "status": "pending", "attempts": 0, "next_attempt_at": naive_now,
                    "delivered_at": None, "last_error": None,
                }
                for target in policy.targets
            ],
        )  # fmt: skip
        return alert

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
