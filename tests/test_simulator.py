"""Data tests of the seeded funnel simulator: determinism, the written contract, the truth."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from features.email import email_domain_kind
from features.spec import FeatureSpec
from features.vocabulary import INTERACTION_TYPES
from simulator.funnel import (
    COMPANY_SIZES,
    COUNTRIES,
    INDUSTRIES,
    INTERACTION_COLUMNS,
    JOB_ROLES,
    LEAD_COLUMNS,
    SENIORITIES,
    SOURCES,
    TRUTH_COLUMNS,
    UNKNOWN_INTERACTION_TYPE,
    Simulation,
    present_conversion_probability,
    read_truth,
    simulate,
    true_conversion_probability,
    write_simulation,
)
from sources.folder import load_dataset

HORIZON = 90.0
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
SIZE_BOUNDS = {
    "1-9": (1, 9),
    "10-49": (10, 49),
    "50-199": (50, 199),
    "200-499": (200, 499),
    "500-999": (500, 999),
    "1000+": (1000, None),
}


@cache
def _sim(n_leads: int = 2000, seed: int = 11, drift: float = 0.0) -> Simulation:
    return simulate(n_leads, seed, drift=drift)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return _sim()


def _matured_snapshots(sim: Simulation, offsets_days: tuple[int, ...]) -> pd.DataFrame:
    """(lead_id, as_of, label) at offsets after creation, unconverted, window closed by export."""
    leads = sim.leads
    parts = []
    for offset in offsets_days:
        as_of = leads["created_at"] + pd.Timedelta(days=offset)
        keep = (as_of + pd.Timedelta(days=HORIZON) <= sim.export_at) & ~(
            leads["converted_at"] <= as_of
        )
        conv = leads.loc[keep, "converted_at"]
        parts.append(
            pd.DataFrame(
                {
                    "lead_id": leads.loc[keep, "lead_id"],
                    "as_of": as_of[keep],
                    "label": (
                        (conv > as_of[keep]) & (conv <= as_of[keep] + pd.Timedelta(days=HORIZON))
                    ).astype(int),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_frames() -> None:
    first, second = simulate(300, seed=5), simulate(300, seed=5)
    pd.testing.assert_frame_equal(first.leads, second.leads)
    pd.testing.assert_frame_equal(first.interactions, second.interactions)
    pd.testing.assert_frame_equal(first.truth, second.truth)
    assert first.meta == second.meta
    assert first.export_at == second.export_at


def test_different_seed_gives_different_data() -> None:
    first, second = simulate(300, seed=5), simulate(300, seed=6)
    assert not first.leads["created_at"].equals(second.leads["created_at"])
    assert not first.truth["fit"].equals(second.truth["fit"])
    assert len(first.interactions) != len(second.interactions) or not first.interactions.equals(
        second.interactions
    )


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    write_simulation(simulate(300, seed=5), tmp_path / "a")
    write_simulation(simulate(300, seed=5), tmp_path / "b")
    for name in ("leads.csv", "interactions.csv", "truth.csv", "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


# --- the in-memory contract ---------------------------------------------------------------------


def test_frames_have_the_contract_columns_and_utc_times(sim: Simulation) -> None:
    assert list(sim.leads.columns) == list(LEAD_COLUMNS)
    assert list(sim.interactions.columns) == list(INTERACTION_COLUMNS)
    assert list(sim.truth.columns) == list(TRUTH_COLUMNS)
    for frame, column in (
        (sim.leads, "created_at"),
        (sim.leads, "converted_at"),
        (sim.interactions, "occurred_at"),
        (sim.truth, "created_at"),
    ):
        assert str(frame[column].dtype) == "datetime64[ns, UTC]", column
    assert sim.export_at == pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=540)


def test_leads_are_unique_and_created_within_the_span(sim: Simulation) -> None:
    leads = sim.leads
    assert leads["lead_id"].is_unique
    assert leads["lead_id"].str.fullmatch(r"L-\d{6}").all()
    assert (leads["lead_id"] == sim.truth["lead_id"]).all()
    assert leads["created_at"].min() >= pd.Timestamp("2024-01-01", tz="UTC")
    assert leads["created_at"].max() < sim.export_at
    converted = leads.dropna(subset=["converted_at"])
    assert (converted["converted_at"] > converted["created_at"]).all()
    assert (converted["converted_at"] < sim.export_at).all()


@pytest.mark.parametrize(
    ("column", "levels"),
    [
        ("industry", set(INDUSTRIES)),
        ("company_size", set(COMPANY_SIZES)),
        ("country", set(COUNTRIES)),
        ("job_role", set(JOB_ROLES)),
        ("seniority", set(SENIORITIES)),
        ("source", set(SOURCES)),
        ("marketing_consent", {"yes", "no"}),
    ],
)
def test_categorical_attributes_use_their_levels(
    sim: Simulation, column: str, levels: set[str]
) -> None:
    seen = set(sim.leads[column])
    assert seen <= levels, seen - levels
    assert len(seen) >= len(levels) - 1  # 2000 leads show (nearly) every level


def test_employee_count_lies_in_its_band(sim: Simulation) -> None:
    for band, (lo, hi) in SIZE_BOUNDS.items():
        counts = sim.leads.loc[sim.leads["company_size"] == band, "employee_count"]
        assert (counts >= lo).all(), band
        if hi is not None:
            assert (counts <= hi).all(), band


def test_email_domain_kind_matches_the_generating_kind(sim: Simulation) -> None:
    derived = sim.leads["email"].map(email_domain_kind)
    assert (derived.to_numpy() == sim.truth["email_kind"].to_numpy()).all()
    assert set(derived) == {"corporate", "free", "disposable", "invalid"}


def test_interactions_respect_creation_conversion_and_export(sim: Simulation) -> None:
    events = sim.interactions.merge(
        sim.leads[["lead_id", "created_at", "converted_at"]], on="lead_id", how="left"
    )
    assert events["created_at"].notna().all(), "interaction of an unknown lead"
    assert (events["occurred_at"] >= events["created_at"]).all()
    assert (events["occurred_at"] < sim.export_at).all()
    assert not (events["occurred_at"] >= events["converted_at"]).any()


def test_interactions_are_sorted_by_lead_then_time(sim: Simulation) -> None:
    events = sim.interactions
    ordered = events.sort_values(["lead_id", "occurred_at"], kind="stable")
    assert (ordered.index == events.index).all()


def test_interaction_types_are_the_vocabulary_plus_a_few_unknown(sim: Simulation) -> None:
    events = sim.interactions
    assert set(events["type"]) <= set(INTERACTION_TYPES) | {UNKNOWN_INTERACTION_TYPE}
    assert set(events["channel"]) <= {"web", "email", "event", "sales"}
    unknown_share = (events["type"] == UNKNOWN_INTERACTION_TYPE).mean()
    assert 0.0005 < unknown_share < 0.01


def test_invalid_emails_bounce_and_never_open(sim: Simulation) -> None:
    kind = sim.truth.set_index("lead_id")["email_kind"]
    events = sim.interactions.assign(kind=kind.reindex(sim.interactions["lead_id"]).to_numpy())
    invalid = events[events["kind"] == "invalid"]
    assert not invalid["type"].isin(["email_open", "email_click"]).any()
    assert (invalid["type"] == "email_bounce").any()


def test_volume_and_conversion_are_plausible(sim: Simulation) -> None:
    per_lead = len(sim.interactions) / len(sim.leads)
    assert 12 <= per_lead <= 40
    leads = sim.leads
    seen_90d = leads["created_at"] + pd.Timedelta(days=90) <= sim.export_at
    within_90d = leads["converted_at"] <= leads["created_at"] + pd.Timedelta(days=90)
    assert 0.06 <= within_90d[seen_90d].mean() <= 0.20


def _late_minus_early(sim: Simulation, values: pd.Series, rows: pd.Series) -> float:
    """Mean of `values` over `rows` created in the last 180 days minus the first 180 days."""
    created = sim.leads["created_at"]
    late = rows & (created >= sim.export_at - pd.Timedelta(days=180))
    early = rows & (created < created.min() + pd.Timedelta(days=180))
    return float(values[late].mean() - values[early].mean())


def test_drift_changes_the_relationships() -> None:
    still, drifting = _sim(), _sim(drift=1.0)
    assert (still.truth["fit_drift_per_day"] == 0).all()
    moving = drifting.truth["fit_drift_per_day"] != 0
    assert set(drifting.leads.loc[moving, "industry"]) == {"healthcare", "education"}
    for sim, shift in ((still, 0.0), (drifting, -0.7)):
        healthcare = sim.leads["industry"] == "healthcare"
        assert _late_minus_early(sim, sim.truth["fit"], healthcare) == pytest.approx(shift, abs=0.2)
    everyone = pd.Series(True, index=still.leads.index)
    paid_social = {
        name: _late_minus_early(sim, sim.leads["source"].isin(["paid_search", "social"]), everyone)
        for name, sim in (("still", still), ("drifting", drifting))
    }
    assert paid_social["drifting"] > paid_social["still"] + 0.08, paid_social
    assert drifting.meta["drift"] == 1.0 and still.meta["drift"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_leads": 0}, "n_leads"),
        ({"span_days": 0}, "span_days"),
        ({"drift": 1.5}, "drift"),
    ],
)
def test_simulate_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"n_leads": 10, "seed": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        simulate(**arguments)


# --- the written files --------------------------------------------------------------------------


def test_written_files_follow_the_format(sim: Simulation, tmp_path: Path) -> None:
    write_simulation(sim, tmp_path)
    leads = pd.read_csv(tmp_path / "leads.csv", dtype=str, keep_default_na=False)
    events = pd.read_csv(tmp_path / "interactions.csv", dtype=str, keep_default_na=False)
    assert list(leads.columns) == list(LEAD_COLUMNS)
    assert list(events.columns) == list(INTERACTION_COLUMNS)
    assert leads["created_at"].str.match(ISO_Z).all()
    assert events["occurred_at"].str.match(ISO_Z).all()
    converted = leads["converted_at"] != ""
    assert leads.loc[converted, "converted_at"].str.match(ISO_Z).all()
    assert converted.sum() == sim.leads["converted_at"].notna().sum()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert {"seed", "n_leads", "start", "export_at", "drift", "description"} <= set(meta)
    assert meta["export_at"] == "2025-06-24T00:00:00Z"


def test_written_files_load_under_the_contract_without_quarantine(
    sim: Simulation, tmp_path: Path
) -> None:
    write_simulation(sim, tmp_path)
    spec = FeatureSpec(
        categorical=[
            "industry",
            "company_size",
            "country",
            "job_role",
            "seniority",
            "source",
            "marketing_consent",
        ],
        numeric=["employee_count"],
    )
    dataset = load_dataset(tmp_path, spec)
    assert dataset.report.quarantined_rows == 0, dataset.report.lines()
    assert len(dataset.leads) == len(sim.leads)
    assert len(dataset.interactions) == len(sim.interactions)
    assert set(dataset.report.unknown_types) == {UNKNOWN_INTERACTION_TYPE}
    loaded = dataset.leads["converted_at"].astype("datetime64[ns, UTC]")
    pd.testing.assert_series_equal(loaded, sim.leads["converted_at"], check_names=False)


def test_read_truth_round_trips_the_probabilities(sim: Simulation, tmp_path: Path) -> None:
    write_simulation(sim, tmp_path)
    truth = read_truth(tmp_path / "truth.csv")
    ids = sim.leads["lead_id"].to_numpy()
    as_of = sim.leads["created_at"] + pd.Timedelta(days=10)
    np.testing.assert_allclose(
        true_conversion_probability(truth, ids, as_of, HORIZON),
        true_conversion_probability(sim.truth, ids, as_of, HORIZON),
        rtol=1e-12,
    )


# --- the truth ----------------------------------------------------------------------------------


def test_true_probabilities_are_calibrated_against_sampled_conversions(sim: Simulation) -> None:
    snaps = _matured_snapshots(sim, (0, 7, 14, 30, 60, 90))
    prob = true_conversion_probability(sim.truth, snaps["lead_id"], snaps["as_of"], HORIZON)
    assert ((prob >= 0) & (prob <= 1)).all()
    # Snapshots of one lead are correlated: allow 4 binomial standard errors, doubled.
    se = np.sqrt((prob * (1 - prob)).sum()) / len(prob)
    assert abs(prob.mean() - snaps["label"].mean()) < 8 * se
    bins = pd.qcut(prob, 5, labels=False)
    for b in range(5):
        p, y = prob[bins == b], snaps["label"].to_numpy()[bins == b]
        se_bin = np.sqrt((p * (1 - p)).sum()) / len(p)
        assert abs(p.mean() - y.mean()) < max(8 * se_bin, 0.01), (
            f"quintile {b}: {p.mean():.3f} vs {y.mean():.3f}"
        )
    assert roc_auc_score(snaps["label"], prob) > 0.75


def test_the_present_oracle_is_calibrated_and_knows_what_has_happened(sim: Simulation) -> None:
    snaps = _matured_snapshots(sim, (0, 30, 90))
    full = true_conversion_probability(sim.truth, snaps["lead_id"], snaps["as_of"], HORIZON)
    present = present_conversion_probability(sim.truth, snaps["lead_id"], snaps["as_of"], HORIZON, draws=32)
    assert ((present >= 0) & (present <= 1)).all()
    # The full probability given the whole truth averages, over the futures the present allows,
    # to the present oracle's: their means agree, and both match the sampled labels.
    se = np.sqrt((present * (1 - present)).sum()) / len(present)
    assert abs(present.mean() - full.mean()) < 4 * se
    assert abs(present.mean() - snaps["label"].mean()) < 8 * se
    # Knowing less, it ranks the conversions less well than the full oracle, and not by chance.
    assert 0.75 < roc_auc_score(snaps["label"], present) < roc_auc_score(snaps["label"], full)
    # A lead whose re-engagement and churn have both happened by as_of has no future to draw.
    age = (snaps["as_of"] - snaps["lead_id"].map(sim.truth.set_index("lead_id")["created_at"])).dt.total_seconds() / 86_400
    truth = sim.truth.set_index("lead_id").loc[snaps["lead_id"]]
    known = ((truth["reengage_at_days"].to_numpy() <= age.to_numpy()) & (truth["churn_at_days"].to_numpy() <= age.to_numpy()))
    assert known.any()
    np.testing.assert_allclose(present[known], full[known], rtol=1e-12)
    assert not np.allclose(present[~known], full[~known])


def test_expected_conversions_over_a_long_window_match_the_sampled_count(sim: Simulation) -> None:
    """Leads of the first 90 days, over 450 days from creation: every window closes by export."""
    early = sim.leads[sim.leads["created_at"] < pd.Timestamp("2024-03-31", tz="UTC")]
    prob = true_conversion_probability(sim.truth, early["lead_id"], early["created_at"], 450.0)
    observed = (early["converted_at"] <= early["created_at"] + pd.Timedelta(days=450)).sum()
    assert abs(prob.sum() - observed) < 4 * np.sqrt((prob * (1 - prob)).sum())


@settings(max_examples=40, deadline=None)
@given(
    row=st.integers(min_value=0, max_value=1999),
    start_days=st.floats(min_value=0.0, max_value=400.0),
    first=st.floats(min_value=0.1, max_value=120.0),
    second=st.floats(min_value=0.1, max_value=120.0),
)
def test_probabilities_chain_over_consecutive_windows(
    row: int, start_days: float, first: float, second: float
) -> None:
    """Survival multiplies: 1 - P(a, h1 + h2) == (1 - P(a, h1)) * (1 - P(a + h1, h2))."""
    truth = _sim().truth
    lead = [truth["lead_id"].iloc[row]]
    a = truth["created_at"].iloc[row] + pd.Timedelta(days=start_days)
    whole = true_conversion_probability(truth, lead, [a], first + second)[0]
    head = true_conversion_probability(truth, lead, [a], first)[0]
    tail = true_conversion_probability(truth, lead, [a + pd.Timedelta(days=first)], second)[0]
    assert 1 - whole == pytest.approx((1 - head) * (1 - tail), rel=1e-9, abs=1e-12)
    assert head <= whole + 1e-12


def test_true_probability_accepts_one_as_of_for_all(sim: Simulation) -> None:
    ids = sim.leads["lead_id"].to_numpy()[:5]
    when = sim.export_at
    np.testing.assert_allclose(
        true_conversion_probability(sim.truth, ids, when, 30.0),
        true_conversion_probability(sim.truth, ids, [when] * 5, 30.0),
    )


@pytest.mark.parametrize(
    ("lead_ids", "days_after_creation", "horizon", "message"),
    [
        (["L-999999"], 1.0, HORIZON, "L-999999"),
        (["L-000001"], -1.0, HORIZON, "before their lead's created_at"),
        (["L-000001"], 1.0, 0.0, "horizon_days"),
    ],
)
def test_true_probability_rejects_bad_snapshots(
    sim: Simulation, lead_ids: list[str], days_after_creation: float, horizon: float, message: str
) -> None:
    as_of = [sim.leads["created_at"].iloc[0] + pd.Timedelta(days=days_after_creation)]
    with pytest.raises(ValueError, match=message):
        true_conversion_probability(sim.truth, lead_ids, as_of, horizon)
