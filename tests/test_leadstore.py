"""The lead store (model/leadstore.py) on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import model.leadstore
from model.leadstore import AlertPolicy, LeadStore, LeadStoreError, LeadUpdate, UnknownLead, open_lead_store
from model.scoring import GridOut, ScoreOut

T0 = datetime(2024, 3, 1, 10, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LeadStore]:
    if request.param == "sqlite":
        yield open_lead_store(f"sqlite:///{tmp_path / 'state' / 'leads.db'}")
        return
    url = request.getfixturevalue("postgres_url")
    store = open_lead_store(url)
    yield store
    with store.engine.begin() as connection:  # the server is shared by the session: leave it empty
        for table in reversed(store.tables.metadata.sorted_tables):
            connection.execute(table.delete())


def a_score(score: int, tier: str, lead_id: str = "L-1") -> ScoreOut:
    return ScoreOut(
        lead_id=lead_id, as_of=T0, probability=score / 100, score=score, tier=tier, mql=False, reasons=None,  # type: ignore[arg-type]
        point_grid=GridOut(points=0, mql=False, rules_fired=[]), warnings=[], model_version="v1",
    )  # fmt: skip


def test_attributes_merge_and_a_late_observation_does_not_overwrite_a_newer_one(store: LeadStore) -> None:
    assert store.upsert_lead("L-1", {"industry": "software", "country": "FR"}, observed_at=T0 + timedelta(days=2)) is True
    assert store.upsert_lead("L-1", {"industry": "retail", "seniority": "director"}, observed_at=T0 + timedelta(days=1)) is False
    store.upsert_lead("L-1", {"country": "DE"}, account_id="acc-1", observed_at=T0 + timedelta(days=3))

    lead, interactions = store.history("L-1")

    assert lead.attributes == {"industry": "software", "country": "DE", "seniority": "director"}
    assert lead.account_id == "acc-1"
    assert interactions == []


def test_created_at_is_the_first_time_seen_until_declared(store: LeadStore) -> None:
    store.upsert_lead("L-1", {}, observed_at=T0 + timedelta(days=5))
    store.add_interactions("L-1", [("e1", "page_view", T0 + timedelta(days=1), None)])
    assert store.history("L-1")[0].created_at == T0 + timedelta(days=1)  # an earlier event: it existed then

    store.upsert_lead("L-1", {}, created_at=T0 + timedelta(days=3))
    store.add_interactions("L-1", [("e0", "page_view", T0, None)])  # before the declared creation: kept, not moved

    lead, interactions = store.history("L-1")
    assert lead.created_at == T0 + timedelta(days=3) and lead.created_at_declared
    assert [i.event_id for i in interactions] == ["e0", "e1"]


def test_interactions_are_idempotent_on_event_ids_and_late_ones_are_accepted(store: LeadStore) -> None:
    first = store.add_interactions("L-1", [
        ("e1", "page_view", T0 + timedelta(hours=1), {"channel": "web", "pages": 3}),
        ("e2", "demo_request", T0 + timedelta(hours=5), None),
    ])  # fmt: skip
    again = store.add_interactions("L-1", [
        ("e2", "demo_request", T0 + timedelta(hours=5), None),
        ("e3", "pricing_page_view", T0 + timedelta(hours=2), None),  # late: earlier than e2, arrives after it
        ("e3", "pricing_page_view", T0 + timedelta(hours=2), None),  # twice in one call
    ])  # fmt: skip

    _, interactions = store.history("L-1")

    assert (first.added, first.duplicates) == (2, 0)
    assert (again.added, again.duplicates) == (1, 2)
    assert [(i.event_id, i.type) for i in interactions] == [("e1", "page_view"), ("e3", "pricing_page_view"), ("e2", "demo_request")]
    assert interactions[0].channel == "web" and interactions[0].numeric_properties() == {"pages": 3}
    assert interactions[0].occurred_at == T0 + timedelta(hours=1)


def observations(prefix: str) -> tuple[list[LeadUpdate], dict[str, list[Any]]]:
    """Identifies, groups and tracks of three leads, late ones and replays among them."""
    a, b, c = f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"
    updates = [
        LeadUpdate(a, {"industry": "software", "country": "FR"}, observed_at=T0 + timedelta(days=2)),
        LeadUpdate(b, {"industry": "retail"}, created_at=T0 + timedelta(days=1), observed_at=T0 + timedelta(days=4)),
        LeadUpdate(a, {"industry": "retail", "seniority": "director"}, observed_at=T0 + timedelta(days=1)),  # late
        LeadUpdate(a, {}, account_id="acc-1", observed_at=T0 + timedelta(days=3)),
        LeadUpdate(a, {}, account_id="acc-0", observed_at=T0 + timedelta(days=2)),  # late
        LeadUpdate(b, {"country": "DE"}, observed_at=T0 + timedelta(days=5)),
    ]
    tracks: dict[str, list[Any]] = {
        a: [("e1", "page_view", T0 + timedelta(hours=30), {"channel": "web"}), ("e0", "demo_request", T0, None)],  # before first seen
        b: [("e2", "page_view", T0, None), ("e2", "page_view", T0, None)],  # before the declared creation; twice
        c: [("e3", "pricing_page_view", T0 + timedelta(days=6), {"pages": 2})],  # a lead first seen by its events
    }
    return updates, tracks


def test_a_batch_stores_what_one_observation_at_a_time_stores(store: LeadStore) -> None:
    one_updates, one_tracks = observations("one")
    with store.session() as s:
        new_one = {u.lead_id for u in one_updates if s.upsert_lead(
            u.lead_id, u.attributes, account_id=u.account_id, created_at=u.created_at, observed_at=u.observed_at
        )}  # fmt: skip
        counts_one = {lead_id: s.add_interactions(lead_id, events) for lead_id, events in one_tracks.items()}
    batch_updates, batch_tracks = observations("batch")
    with store.session() as s:
        new_batch = s.upsert_leads(batch_updates)
        counts_batch = s.add_interactions_of(batch_tracks)

    assert {i.split("-", 1)[1] for i in new_one} == {i.split("-", 1)[1] for i in new_batch} == {"a", "b"}
    assert [(c.added, c.duplicates) for c in counts_one.values()] == [(c.added, c.duplicates) for c in counts_batch.values()]
    for name in "abc":
        lead_one, events_one = store.history(f"one-{name}")
        lead_batch, events_batch = store.history(f"batch-{name}")
        assert (lead_one.created_at, lead_one.created_at_declared, lead_one.account_id, lead_one.attributes) == (
            lead_batch.created_at, lead_batch.created_at_declared, lead_batch.account_id, lead_batch.attributes
        ), name  # fmt: skip
        assert events_one == events_batch, name
    lead, events = store.history("batch-a")
    assert lead.attributes == {"industry": "software", "country": "FR", "seniority": "director"} and lead.account_id == "acc-1"
    assert lead.created_at == T0 and [e.event_id for e in events] == ["e0", "e1"]


def test_scores_recorded_together_queue_the_alerts_recorded_one_at_a_time_queue(store: LeadStore) -> None:
    policy = AlertPolicy(score_jump=20, targets=("webhook:http://a",))
    store.record_score("L-warm", a_score(40, "warm", "L-warm"), policy)
    store.record_score("L-hot", a_score(91, "hot", "L-hot"), policy)
    scores = {"L-warm": a_score(65, "warm", "L-warm"), "L-hot": a_score(93, "hot", "L-hot"), "L-new": a_score(95, "hot", "L-new")}

    with store.session() as s:
        alerts = s.record_scores(scores, policy)
        last = s.last_scores(list(scores))

    assert {lead_id: alert.kinds for lead_id, alert in alerts.items()} == {"L-warm": ("score_jump",), "L-new": ("entered_hot",)}
    assert alerts["L-warm"].payload["previous_score"] == 40 and alerts["L-new"].payload["previous_score"] is None
    assert {lead_id: (one.score, one.tier) for lead_id, one in last.items()} == {
        "L-warm": (65, "warm"), "L-hot": (93, "hot"), "L-new": (95, "hot")
    }  # fmt: skip
    assert store.outbox_counts().pending == 1 + 2  # L-hot's first score, then these two


def test_answered_writes_are_synced_to_disk_and_the_outbox_bookkeeping_is_not(tmp_path: Path) -> None:
    store = open_lead_store(f"sqlite:///{tmp_path / 'leads.db'}")
    with store.session() as s:
        synced = s.connection.exec_driver_sql("PRAGMA synchronous").scalar()
    with store.session(synced=False) as s:
        bookkeeping = s.connection.exec_driver_sql("PRAGMA synchronous").scalar()
    with store.session() as s:
        journal = s.connection.exec_driver_sql("PRAGMA journal_mode").scalar()

    assert (synced, bookkeeping, journal) == (2, 1, "wal")  # FULL for events, scores, alerts queued; NORMAL for leases


def test_a_store_held_too_long_by_another_thread_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model.leadstore, "LOCK_TIMEOUT_S", 0.2)
    store = open_lead_store(f"sqlite:///{tmp_path / 'leads.db'}")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.session():
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        with pytest.raises(LeadStoreError, match=r"leads\.db.*busy: another thread held it for 0.2 s"):
            store.upsert_lead("L-1", {})
    finally:
        release.set()
        holder.join()
    assert store.upsert_lead("L-1", {}) is True  # the lock is free again


def test_an_unknown_lead_is_named(store: LeadStore) -> None:
    with pytest.raises(UnknownLead, match="no lead 'nobody@example.com' in the lead store"):
        store.history("nobody@example.com")


def test_forget_erases_the_lead_and_a_replay_of_its_messages_stays_a_duplicate(store: LeadStore) -> None:
    with store.session() as s:
        assert s.claim_messages([("m1", "jane@acme.com", "identify")]) == {"m1"}
        s.upsert_lead("jane@acme.com", {"email": "jane@acme.com"})
        s.add_interactions("jane@acme.com", [("m2", "demo_request", T0, None)])
        s.record_score("jane@acme.com", a_score(95, "hot", "jane@acme.com"), AlertPolicy(targets=("webhook:http://x",)))
    store.upsert_lead("someone-else", {"industry": "retail"})

    deleted = store.forget("jane@acme.com")

    assert deleted == 4  # the lead, its interaction, its score, its queued alert
    with pytest.raises(UnknownLead):
        store.history("jane@acme.com")
    assert store.history("someone-else")[0].attributes == {"industry": "retail"}
    assert store.outbox_counts().pending == 0
    with store.engine.connect() as connection:
        kept = connection.execute(sa.text("SELECT message_id, lead_id FROM processed_messages")).all()
    assert [tuple(row) for row in kept] == [("m1", None)]
    with store.session() as s:
        assert s.claim_messages([("m1", "jane@acme.com", "identify")]) == set()
    assert store.forget("jane@acme.com") == 0


@pytest.mark.parametrize(
    ("scores", "jump", "expected"),
    [
        pytest.param([(40, "warm"), (92, "hot")], 0, [(), ("entered_hot",)], id="enters-hot"),
        pytest.param([(91, "hot")], 20, [("entered_hot",)], id="first-score-hot"),
        pytest.param([(91, "hot"), (97, "hot")], 5, [("entered_hot",), ("score_jump",)], id="hot-stays-hot-jumps"),
        pytest.param([(10, "cold"), (35, "warm"), (40, "warm")], 20, [(), ("score_jump",), ()], id="jump-then-small-rise"),
        pytest.param([(10, "cold"), (95, "hot")], 20, [(), ("entered_hot", "score_jump")], id="both"),
        pytest.param([(95, "hot"), (40, "warm"), (95, "hot")], 0, [("entered_hot",), (), ("entered_hot",)], id="leaves-and-enters-again"),
    ],
)  # fmt: skip
def test_an_alert_is_entering_hot_or_a_jump(store: LeadStore, scores: list[tuple[int, str]], jump: int, expected: list[tuple[str, ...]]) -> None:
    policy = AlertPolicy(score_jump=jump, targets=("webhook:http://a", "hubspot"))
    kinds = []
    for score, tier in scores:
        alert = store.record_score("L-1", a_score(score, tier), policy)
        kinds.append(() if alert is None else alert.kinds)

    assert kinds == expected
    assert store.outbox_counts().pending == 2 * sum(bool(k) for k in expected)  # one delivery per target


def test_without_targets_scores_are_recorded_and_nothing_is_queued(store: LeadStore) -> None:
    assert store.record_score("L-1", a_score(95, "hot"), AlertPolicy(score_jump=5)) is None
    assert store.outbox_counts().pending == 0
    with store.session() as s:
        last = s.last_score("L-1")
    assert last is not None and (last.score, last.tier) == (95, "hot")


def test_outbox_leases_retries_and_gives_up(store: LeadStore) -> None:
    store.record_score("L-1", a_score(95, "hot"), AlertPolicy(targets=("webhook:http://a", "webhook:http://b")))
    now = datetime.now(UTC)

    claimed = store.claim_due(10, timedelta(seconds=30), now)
    assert [i.target for i in claimed] == ["webhook:http://a", "webhook:http://b"]
    assert claimed[0].alert_id == claimed[1].alert_id and claimed[0].payload["lead_id"] == "L-1"
    assert store.claim_due(10, timedelta(seconds=30), now) == []  # leased
    assert len(store.claim_due(10, timedelta(seconds=30), now + timedelta(seconds=31))) == 2  # a dead drainer's lease ends

    store.mark_failed([claimed[0].id], "HTTP 500", now + timedelta(seconds=60))
    store.mark_failed([claimed[1].id], "HTTP 410 Gone", None)
    assert store.claim_due(10, timedelta(seconds=30), now + timedelta(seconds=59)) == []
    retried = store.claim_due(10, timedelta(seconds=30), now + timedelta(seconds=61))
    assert [(i.id, i.attempts) for i in retried] == [(claimed[0].id, 1)]
    store.mark_delivered([claimed[0].id])
    assert store.outbox_counts() == type(store.outbox_counts())(pending=0, delivered=1, dead=1)
    assert store.next_due() is None


def test_sqlite_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "leads.db"
    store = open_lead_store(f"sqlite:///{path}")
    store.upsert_lead("L-1", {"email": "jane@acme.com"})

    files = [p for p in path.parent.iterdir() if p.name.startswith("leads.db")]
    assert path in files
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("sqlite:///{tmp}/missing/leads.db", "no such database", id="missing-file"),
        pytest.param("mysql://u@h/db", "backend 'mysql' is not supported", id="other-backend"),
        pytest.param("sqlite://", "in-memory", id="in-memory"),
        pytest.param("not a url", "not a SQLAlchemy URL", id="garbage"),
    ],
)
def test_a_store_that_cannot_be_used_is_refused_not_created(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(LeadStoreError, match=message):
        open_lead_store(url.format(tmp=tmp_path), create=False)
    assert not (tmp_path / "missing").exists()


def test_concurrent_writers_lose_no_attribute(store: LeadStore) -> None:
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            store.upsert_lead("L-1", {f"attribute_{i}": i})
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert store.history("L-1")[0].attributes == {f"attribute_{i}": i for i in range(16)}
