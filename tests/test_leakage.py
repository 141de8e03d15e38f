"""The leakage guard: planted leaks are flagged, honest columns are not, and flags are acted on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import StaticDataset, ValidationReport
from features.spec import FeatureSpec
from training.leakage import (
    AUC_ALL_ROWS,
    guard_input_for_dataset,
    guard_input_for_static,
    near_duplicate_groups,
    run_guard,
    spec_without,
)

SPEC = FeatureSpec(categorical=["source", "status"], numeric=["minutes", "visits"], email_column=None, interactions=False)


def _static(frame: pd.DataFrame) -> StaticDataset:
    return StaticDataset(leads=frame.reset_index(drop=True), quarantine=pd.DataFrame(), report=ValidationReport())


def test_planted_leaky_column_is_flagged_and_honest_ones_are_not(static_export) -> None:
    report = run_guard(guard_input_for_static(_static(static_export()), SPEC, test_fraction=0.2))
    flagged = {f.column: f for f in report.findings}
    assert set(report.flagged_columns()) == {"status"}
    assert flagged["status"].check == "single_column_auc"
    assert flagged["status"].value >= AUC_ALL_ROWS
    scores = {s.column: s.auc_all for s in report.scores}
    assert scores["minutes"] < 0.8 and scores["source"] < 0.8
    assert report.excluded() == ["status"]
    assert "| status | single_column_auc |" in report.table()


def test_a_verdict_filled_for_some_leads_is_flagged_on_its_filled_rows(static_export) -> None:
    frame = static_export()
    # Sales rated only the leads they worked (40 %): the rating nearly decides those.
    worked = np.random.default_rng(1).random(len(frame)) < 0.4
    rating = np.where(frame["converted"] == 1, "High", "Worst")
    frame["status"] = np.where(worked, rating, None)
    report = run_guard(guard_input_for_static(_static(frame), SPEC, test_fraction=0.2))
    finding = next(f for f in report.findings if f.column == "status")
    score = next(s for s in report.scores if s.column == "status")
    assert score.auc_all < AUC_ALL_ROWS  # missing for most leads: all rows alone would not catch it
    assert finding.detail.startswith("filled for 4")


def test_post_outcome_by_config_is_flagged_and_can_be_allowed(static_export) -> None:
    data = guard_input_for_static(_static(static_export()), SPEC, test_fraction=0.2, post_outcome=["visits"])
    report = run_guard(data, allowed=["status"])
    assert report.flagged_columns() == ["status", "visits"]
    assert report.excluded() == ["visits"]
    assert report.tags() == {
        "leakage.flagged": "status,visits",
        "leakage.allowed": "status",
        "leakage.excluded": "visits",
        "leakage.warnings": "-",
    }
    kept = spec_without(SPEC, report.excluded())
    assert kept.categorical == ["source", "status"] and kept.numeric == ["minutes"]


def test_id_and_row_order_that_encode_the_label_are_flagged(static_export) -> None:
    frame = static_export(seed=2)
    # Ids numbered after the outcome was known: converted leads got the later numbers.
    ranked = frame.assign(noise=np.random.default_rng(3).random(len(frame)))
    order = (ranked["converted"] + 0.5 * ranked["noise"]).rank(method="first").astype(int)
    frame["lead_id"] = [f"CRM-{n:06d}" for n in order]
    frame = frame.sort_values("converted", kind="stable")  # and the export is sorted by outcome
    report = run_guard(guard_input_for_static(_static(frame), SPEC, test_fraction=0.2))
    checks = {(f.check, f.column) for f in report.findings}
    assert ("id_or_order", "lead_id") in checks
    assert ("id_or_order", "(row order)") in checks
    assert "lead_id" not in report.flagged_columns()  # not a feature: a warning, nothing to exclude
    row_order = next(f for f in report.findings if f.column == "(row order)")
    assert "sorted or numbered by outcome" in row_order.detail


def test_an_order_along_which_the_rate_drifts_is_told_apart_from_a_sort(static_export) -> None:
    frame = static_export(n=2000, seed=6)
    rng = np.random.default_rng(6)
    # The conversion rate climbs from about 2 % to about 60 % over the export, every stretch mixed.
    frame["converted"] = (rng.random(len(frame)) < np.linspace(0.02, 0.6, len(frame))).astype(int)
    report = run_guard(guard_input_for_static(_static(frame), SPEC, test_fraction=0.2))
    row_order = next(f for f in report.findings if f.column == "(row order)")
    assert row_order.value >= 0.7
    assert "drifts" in row_order.detail and "rather than a sort by outcome" in row_order.detail


def test_honest_ids_and_order_are_not_flagged(static_export) -> None:
    report = run_guard(guard_input_for_static(_static(static_export(seed=4)), SPEC, test_fraction=0.2))
    assert not [f for f in report.findings if f.check == "id_or_order"]


def test_near_duplicates_are_flagged_and_grouped(static_export) -> None:
    frame = static_export(seed=5)
    twins = frame.sample(60, random_state=0).assign(lead_id=lambda f: "DUP-" + f["lead_id"])
    report = run_guard(guard_input_for_static(_static(pd.concat([frame, twins])), SPEC, test_fraction=0.2))
    finding = next(f for f in report.findings if f.check == "near_duplicates")
    assert finding.value >= 0.01
    groups = report.twin_groups
    assert groups is not None and (groups >= 0).sum() >= 100
    # Without the twins, equal values by chance are not duplicates.
    clean = run_guard(guard_input_for_static(_static(frame), SPEC, test_fraction=0.2))
    assert not [f for f in clean.findings if f.check == "near_duplicates"]


def test_near_duplicates_need_a_rare_value() -> None:
    # Many identical low-information rows (a category and a zero) are not the same lead twice.
    frame = pd.DataFrame({"a": ["x"] * 50 + ["y"] * 50, "n": [0.0] * 100})
    groups, checked = near_duplicate_groups(frame, ["a", "n"])
    assert not checked and (groups == -1).all()


def test_recorded_after_the_outcome_is_flagged(static_export) -> None:
    frame = static_export(seed=6)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame["converted_at"] = pd.to_datetime(np.where(frame["converted"] == 1, start, pd.NaT), utc=True)
    recorded = pd.DataFrame(
        {
            "lead_id": frame["lead_id"],
            # status was set after the conversion; minutes were known before.
            "status": start + pd.Timedelta(days=2),
            "minutes": start - pd.Timedelta(days=30),
        }
    )
    report = run_guard(guard_input_for_static(_static(frame), SPEC, 0.2, recorded=recorded))
    after = {f.column: f for f in report.findings if f.check == "recorded_after"}
    assert set(after) == {"status"}
    assert after["status"].value == 1.0


def test_simulated_funnel_attributes_are_not_flagged(simulated_dataset) -> None:
    from training.config import ProjectConfig

    config = ProjectConfig()
    t = config.training
    data = guard_input_for_dataset(simulated_dataset, config.features, t.horizon_days, t.test_fraction, t.snapshot_offsets_days)
    report = run_guard(data)
    assert report.flagged_columns() == []
    assert not [f for f in report.findings if f.check == "id_or_order"]


def test_a_clock_column_is_excluded_and_a_lead_attribute_is_not() -> None:
    """A campaign month tells the periods apart by itself; the lead's own attributes do not."""
    from features.contract import validate_static
    from training.leakage import AUC_CLOCK, guard_input_for_static, run_guard

    rng = np.random.default_rng(5)
    n = 4000
    spec = FeatureSpec(categorical=["campaign_month", "source"], numeric=["minutes"], email_column=None, interactions=False)
    month = np.array([f"m{int(i * 8 / n)}" for i in range(n)])  # eight campaigns, one after the other
    minutes = rng.gamma(2.0, 5.0, n)
    frame = pd.DataFrame({
        "lead_id": [f"L{i}" for i in range(n)], "campaign_month": month, "source": rng.choice(["web", "ref"], n),
        "minutes": minutes, "converted": (rng.random(n) < 1 / (1 + np.exp(-(minutes / 10 - 2)))).astype(int),
        "order": np.arange(n, dtype=float),
    })  # fmt: skip
    data = validate_static(frame, spec, None)
    report = run_guard(guard_input_for_static(data, spec, 0.2))
    clock = [f for f in report.findings if f.check == "clock_column"]
    assert [f.column for f in clock] == ["campaign_month"], report.table()
    assert clock[0].value >= AUC_CLOCK
    assert "campaign_month" in report.excluded() and "minutes" not in report.excluded()
    # The same export without an order has no clock to tell.
    unordered = validate_static(frame.drop(columns="order"), spec, None)
    assert not [f for f in run_guard(guard_input_for_static(unordered, spec, 0.2)).findings if f.check == "clock_column"]
