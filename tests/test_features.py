"""Point-in-time features: exact values on tiny frames, no peeking at the future, train/serve parity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import validate
from features.email import email_domain_kind
from features.engine import (
    _column_codes,
    _lead_codes,
    _type_slot_codes,
    lead_features,
    snapshot_features,
    to_epoch_seconds,
    type_slots,
)
from features.spec import FeatureSpec
from features.vocabulary import INTERACTION_TYPES

SPEC = FeatureSpec(categorical=["industry"], numeric=["employee_count"], email_column="email")
T0 = pd.Timestamp("2024-01-01T00:00:00Z")


def _leads(n: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in range(n)],
            "created_at": [T0] * n,
            "converted_at": [pd.NaT] * n,
            "email": ["ana@acme-tools.com"] * n,
            "industry": ["software"] * n,
            "employee_count": [120.0] * n,
        }
    )


def _events(rows: list[tuple[str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": [r[0] for r in rows],
            "occurred_at": [T0 + pd.Timedelta(days=r[1]) for r in rows],
            "type": [r[2] for r in rows],
        },
        columns=["lead_id", "occurred_at", "type"],
    )


def _one(events: pd.DataFrame, as_of_days: float, leads: pd.DataFrame | None = None) -> dict[str, object]:
    leads = _leads() if leads is None else leads
    snaps = pd.DataFrame({"lead_id": ["L0"], "as_of": [T0 + pd.Timedelta(days=as_of_days)]})
    return snapshot_features(leads, events, snaps, SPEC).row(0)


@pytest.mark.parametrize(
    ("event_day", "as_of_day", "feature", "expected"),
    [
        (10.0, 10.0, "n_pricing_page_view_7d", 1),  # an event at as_of is seen
        (3.0, 10.0, "n_pricing_page_view_7d", 0),  # exactly 7 days before: outside (as_of-7d, as_of]
        (3.5, 10.0, "n_pricing_page_view_7d", 1),
        (3.0, 10.0, "n_pricing_page_view_30d", 1),
        (10.5, 10.0, "n_pricing_page_view_total", 0),  # the future is not seen
        (4.0, 10.0, "days_since_pricing_page_view", 6.0),
        (4.0, 10.0, "lead_age_days", 10.0),
    ],
)
def test_window_edges(event_day: float, as_of_day: float, feature: str, expected: float) -> None:
    row = _one(_events([("L0", event_day, "pricing_page_view")]), as_of_day)
    assert row[feature] == expected


def test_a_row_view_reads_what_row_builds() -> None:
    leads = _leads(3)
    leads.loc[1, "industry"] = None
    events = _events([("L0", 1.0, "pricing_page_view"), ("L2", 2.0, "demo_request")])
    snaps = pd.DataFrame({"lead_id": ["L0", "L1", "L2"], "as_of": [T0 + pd.Timedelta(days=5)] * 3})
    rows = snapshot_features(leads, events, snaps, SPEC)
    for i in range(3):
        view, built = rows.row_view(i), rows.row(i)
        assert list(view) == list(built) and len(view) == len(built)
        assert {k: view[k] for k in view} == pytest.approx(built, nan_ok=True)
        assert all(type(view[k]) is type(built[k]) for k in built)
    with pytest.raises(KeyError):
        rows.row_view(0)["no_such_feature"]


def test_recency_is_nan_without_events() -> None:
    row = _one(_events([("L0", 1.0, "page_view")]), 5.0)
    assert np.isnan(row["days_since_demo_request"])
    assert row["days_since_page_view"] == 4.0


def test_active_days_count_distinct_utc_days() -> None:
    events = _events([("L0", 1.1, "page_view"), ("L0", 1.9, "email_open"), ("L0", 2.2, "page_view"), ("L0", 40.0, "page_view")])
    row = _one(events, 41.0)
    assert row["active_days_total"] == 3
    assert row["active_days_30d"] == 1


def test_engagement_halves_each_halflife() -> None:
    weight = SPEC.engagement_weights["demo_request"]
    row = _one(_events([("L0", 0.0, "demo_request")]), SPEC.halflife_days)
    assert row["engagement_decayed"] == pytest.approx(weight / 2)


def test_unknown_types_are_counted_as_other_only() -> None:
    row = _one(_events([("L0", 1.0, "chat_started"), ("L0", 2.0, "page_view")]), 5.0)
    assert row["n_other_events_total"] == 1
    assert row["n_events_total"] == 1


def test_other_leads_do_not_leak_into_a_lead() -> None:
    events = _events([("L1", 1.0, "demo_request"), ("L0", 1.0, "page_view")])
    row = _one(events, 5.0, leads=_leads(2))
    assert row["n_demo_request_total"] == 0
    assert row["n_page_view_total"] == 1


@pytest.mark.parametrize("dtype", ["str", object])
@pytest.mark.parametrize("grouped", [True, False])
def test_event_codes_equal_the_factorize_path(dtype: object, grouped: bool) -> None:
    # The Arrow fast paths (runs of lead ids, index_in of types) against factorize + look-up,
    # with unknown ids, missing values and types outside the vocabulary.
    rng = np.random.default_rng(3)
    ids = np.array([f"L{i}" for i in rng.integers(0, 40, 400)] + [None] * 5 + ["ghost"] * 5, dtype=object)
    types = np.array(list(rng.choice([*INTERACTION_TYPES, "chat_started"], 405)) + [None] * 5, dtype=object)
    if grouped:
        order = np.argsort(np.where(ids == None, "~", ids).astype(str), kind="stable")  # noqa: E711
        ids, types = ids[order], types[order]
    lead_pos = pd.Index(pd.Series([f"L{i}" for i in range(0, 40, 2)] + ["ghost"], dtype=dtype))
    id_col, type_col = pd.Series(ids, dtype=dtype), pd.Series(types, dtype=dtype)
    spec = FeatureSpec()
    np.testing.assert_array_equal(_lead_codes(id_col, lead_pos), _column_codes(id_col, lead_pos.get_indexer, -1))
    np.testing.assert_array_equal(
        _type_slot_codes(type_col, spec),
        _column_codes(type_col, lambda t: type_slots(t, spec), len(spec.interaction_types)),
    )


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("j.moreau@northwind-logistics.com", "corporate"),
        ("ana.k@gmail.com", "free"),
        ("x7@mailinator.com", "disposable"),
        ("john.doe@", "invalid"),
        ("n/a", "invalid"),
        ("", None),
        (None, None),
    ],
)
def test_email_domain_kind(address: object, kind: str | None) -> None:
    assert email_domain_kind(address) == kind


# --- properties over random histories -------------------------------------------------------

event_strategy = st.lists(
    st.tuples(
        st.integers(0, 2),  # lead
        st.floats(0, 200, allow_nan=False),  # day after creation
        st.sampled_from([*INTERACTION_TYPES, "chat_started"]),
    ),
    max_size=40,
)


def _random_world(events: list[tuple[int, float, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    leads = _leads(3)
    leads["created_at"] = [T0, T0 + pd.Timedelta(days=3), T0 + pd.Timedelta(hours=5)]
    created = dict(zip(leads["lead_id"], leads["created_at"], strict=True))
    frame = pd.DataFrame(
        {
            "lead_id": [f"L{e[0]}" for e in events],
            "occurred_at": [created[f"L{e[0]}"] + pd.Timedelta(days=e[1]) for e in events],
            "type": [e[2] for e in events],
        },
        columns=["lead_id", "occurred_at", "type"],
    )
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
    return leads, frame


def _frame_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return all(
        np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=a[c].dtype.kind == "f") for c in a.columns
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(past=event_strategy, future=event_strategy, as_of_day=st.floats(0, 150, allow_nan=False))
def test_events_after_as_of_never_change_a_feature(past, future, as_of_day: float) -> None:
    leads, events = _random_world(past)
    snaps = pd.DataFrame({"lead_id": ["L0", "L1", "L2"], "as_of": [T0 + pd.Timedelta(days=as_of_day + 3)] * 3})
    before = snapshot_features(leads, events, snaps, SPEC).to_frame(SPEC)
    _, extra = _random_world(future)
    as_of = snaps["as_of"].iloc[0]
    # Move every extra event strictly after the snapshot time.
    extra["occurred_at"] = as_of + pd.Timedelta(seconds=1) + (extra["occurred_at"] - T0)
    after = snapshot_features(leads, pd.concat([events, extra], ignore_index=True), snaps, SPEC).to_frame(SPEC)
    assert _frame_equal(before, after)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_strategy, as_of_day=st.floats(0, 250, allow_nan=False))
def test_serving_path_equals_training_path(events, as_of_day: float) -> None:
    leads, frame = _random_world(events)
    as_of = T0 + pd.Timedelta(days=as_of_day + 3)
    snaps = pd.DataFrame({"lead_id": leads["lead_id"], "as_of": [as_of] * 3})
    batch = snapshot_features(leads, frame, snaps, SPEC)
    for i, lead in leads.iterrows():
        own = frame[frame["lead_id"] == lead["lead_id"]]
        one = lead_features(
            int(to_epoch_seconds(pd.Series([lead["created_at"]]))[0]),
            {c: lead[c] for c in SPEC.attribute_columns()},
            to_epoch_seconds(own["occurred_at"]),
            own["type"].tolist(),
            int(to_epoch_seconds(pd.Series([as_of]))[0]),
            SPEC,
        )
        assert _frame_equal(batch.to_frame(SPEC).iloc[[i]].reset_index(drop=True), one.to_frame(SPEC))


def test_parity_on_simulated_leads(simulated_dataset) -> None:
    """Serving path == training path, exactly, for 200 simulated leads at several times."""
    from training.config import ProjectConfig

    spec = ProjectConfig().features
    data = simulated_dataset
    leads = data.leads.head(200)
    snaps = pd.DataFrame(
        {
            "lead_id": np.repeat(leads["lead_id"].to_numpy(), 3),
            "as_of": np.concatenate([(leads["created_at"] + pd.Timedelta(days=d)).to_numpy() for d in (0, 20, 75)]).reshape(3, -1).T.ravel(),
        }
    )
    snaps["as_of"] = pd.to_datetime(snaps["as_of"], utc=True)
    batch = snapshot_features(data.leads, data.interactions, snaps, spec).to_frame(spec)
    by_lead = dict(tuple(data.interactions.groupby("lead_id")))
    for i, snap in snaps.iterrows():
        lead = leads.set_index("lead_id").loc[snap["lead_id"]]
        own = by_lead.get(snap["lead_id"], data.interactions.iloc[:0])
        one = lead_features(
            int(to_epoch_seconds(pd.Series([lead["created_at"]]))[0]),
            {c: lead[c] for c in spec.attribute_columns()},
            to_epoch_seconds(own["occurred_at"]),
            own["type"].tolist(),
            int(to_epoch_seconds(pd.Series([snap["as_of"]]))[0]),
            spec,
        ).to_frame(spec)
        assert _frame_equal(batch.iloc[[i]].reset_index(drop=True), one), snap.to_dict()


# --- the data contract ------------------------------------------------------------------------


def _raw_leads() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": ["A", "B", "C", "C", "D", "E"],
            "created_at": ["2024-01-01", "2024-01-02T10:00:00+02:00", "2024-01-03", "2024-01-03", "not a date", "2024-01-05"],
            "converted_at": ["", "2024-02-01", None, None, None, "2023-12-01"],
            "email": ["a@acme.com", "b@gmail.com", "c@x.io", "c@x.io", "d@d.com", "e@e.com"],
            "industry": ["software", "retail", "retail", "retail", "other", "other"],
            "employee_count": ["10", "abc", "30", "30", "5", "5"],
        }
    )


def _raw_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": ["A", "A", "B", "Z", "A", "A"],
            "occurred_at": ["2024-01-02", "2023-12-31", "2024-01-03", "2024-01-03", "garbage", "2024-01-04"],
            "type": ["page_view", "page_view", "demo_request", "page_view", "page_view", "chat_started"],
        }
    )


def test_contract_quarantines_each_rule_with_count_and_examples() -> None:
    # Exported after B's conversion on 2024-02-01: no row is dated after the data end.
    data = validate(_raw_leads(), _raw_events(), SPEC, exported_at="2024-03-01")
    found = {(b.table, b.rule): b for b in data.report.breaches}
    assert found[("leads", "have an unparsable, out-of-range or empty created_at")].examples == ["D"]
    assert found[("leads", "have converted_at before created_at")].examples == ["E"]
    assert found[("leads", "share a lead_id with another row")].count == 2
    assert found[("leads", "have a non-numeric or infinite employee_count")].action.startswith("kept")
    assert found[("interactions", "reference an unknown or quarantined lead_id")].examples == ["Z"]
    assert found[("interactions", "occurred before their lead's created_at")].count == 1
    assert found[("interactions", "have an unparsable, out-of-range or empty occurred_at")].count == 1
    assert data.report.unknown_types == {"chat_started": 1}
    # Nothing is lost: every input row is either kept or in the quarantine.
    assert len(data.leads) + (data.quarantine["table"] == "leads").sum() == len(_raw_leads())
    assert len(data.interactions) + (data.quarantine["table"] == "interactions").sum() == len(_raw_events())
    assert list(data.leads["lead_id"]) == ["A", "B"]
    assert data.leads.loc[1, "created_at"] == pd.Timestamp("2024-01-02T08:00:00Z")
    assert np.isnan(data.leads.loc[1, "employee_count"])


def test_contract_missing_columns_is_an_error() -> None:
    from features.contract import ContractError

    with pytest.raises(ContractError, match=r"leads: missing required columns \['industry'\]"):
        validate(_raw_leads().drop(columns=["industry"]), _raw_events(), SPEC)
    with pytest.raises(ContractError, match="interactions: missing required columns"):
        validate(_raw_leads(), _raw_events().drop(columns=["type"]), SPEC)
