"""Time is explicit: the data end, rows dated after it, repeated events, empty attribute keys,
validation labels that mature before the test period, and a static model calibrated as itself.

Issue 11, items 2 and 3: each test here failed on commit 6209874.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import validate
from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
from features.spec import FeatureSpec
from sources.folder import load_dataset
from training.config import ProjectConfig

SPEC = FeatureSpec(categorical=["industry"], numeric=[], email_column=None)
STRAY = "2031-06-24T00:00:00Z"


def _leads() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": ["A", "B", "C"],
            "created_at": ["2024-01-01", "2024-01-10", "2024-02-01"],
            "converted_at": ["2024-01-20", "", ""],
            "industry": ["software", "retail", "retail"],
        }
    )


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": ["A", "A", "B", "C"],
            "occurred_at": ["2024-01-02", "2024-01-05", "2024-01-11", STRAY],
            "type": ["page_view", "demo_request", "page_view", "page_view"],
        }
    )


def _breaches(data) -> dict[tuple[str, str], object]:
    return {(b.table, b.rule.split(" 20")[0]): b for b in data.report.breaches}


# -- a stray future date does not define time ---------------------------------------------


def test_a_future_dated_event_is_quarantined_not_the_data_end() -> None:
    data = validate(_leads(), _events(), SPEC)
    # Without an export time the data ends at the latest lead creation, never at the stray event.
    assert data.data_end == pd.Timestamp("2024-02-01", tz="UTC")
    assert data.data_end_source == "latest lead creation"
    breach = _breaches(data)[("interactions", "occurred after the data end")]
    assert (breach.count, breach.examples, breach.action) == (1, ["C"], "quarantined")
    assert "latest lead creation" in breach.rule
    stray = data.quarantine[data.quarantine["rule"] == breach.rule]
    assert [pd.Timestamp(t) for t in stray["occurred_at"]] == [pd.Timestamp(STRAY)]
    assert (data.interactions["occurred_at"] <= data.data_end).all()
    assert any(line.startswith("data end: 2024-02-01") for line in data.report.lines())


def test_exported_at_is_the_data_end_and_rows_after_it_are_quarantined() -> None:
    leads = pd.concat(
        [_leads(), pd.DataFrame({"lead_id": ["D", "E"], "created_at": ["2024-03-05", "2024-02-02"],
                                 "converted_at": ["", "2024-03-09"], "industry": ["retail", "retail"]})],
        ignore_index=True,
    )
    data = validate(leads, _events(), SPEC, exported_at="2024-03-01T00:00:00Z")
    assert data.data_end == pd.Timestamp("2024-03-01", tz="UTC")
    assert data.data_end_source == "exported_at"
    found = _breaches(data)
    assert found[("leads", "were created after the data end")].examples == ["D"]
    # A conversion after the export is a wrong date: the lead cannot be labelled, it is set aside.
    assert found[("leads", "converted after the data end")].examples == ["E"]
    assert found[("interactions", "occurred after the data end")].examples == ["C"]
    assert sorted(data.leads["lead_id"]) == ["A", "B", "C"]
    assert data.report.quarantined_rows == 3 == len(data.quarantine)
    assert data.report.to_dict()["data_end_source"] == "exported_at"


def _copy_without_meta(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("leads.csv", "interactions.csv"):
        shutil.copy(source / name, target / name)
    return target


def _with_stray_event(folder: Path) -> None:
    events = pd.read_csv(folder / "interactions.csv", dtype=str, keep_default_na=False, na_values=[""])
    stray = events.iloc[[0]].assign(occurred_at=STRAY)
    pd.concat([events, stray], ignore_index=True).to_csv(folder / "interactions.csv", index=False)


def _matured_snapshots(data) -> pd.DataFrame:
    t = ProjectConfig().training
    snaps = snapshot_times(data.leads, t.snapshot_offsets_days, matured_label_cutoff(data.data_end, t.horizon_days))
    snaps["label"] = conversion_labels(snaps, data.leads, t.horizon_days)
    return snaps


@pytest.mark.parametrize("meta", [True, False], ids=["meta.json export_at", "latest lead creation"])
def test_one_event_years_ahead_changes_no_snapshot_and_no_label(simulated_dir: Path, tmp_path: Path, meta: bool) -> None:
    features = ProjectConfig().features
    clean_dir = simulated_dir if meta else _copy_without_meta(simulated_dir, tmp_path / "clean")
    stray_dir = tmp_path / "stray"
    if meta:
        shutil.copytree(simulated_dir, stray_dir)
    else:
        _copy_without_meta(simulated_dir, stray_dir)
    _with_stray_event(stray_dir)
    clean, stray = load_dataset(clean_dir, features), load_dataset(stray_dir, features)
    assert stray.data_end == clean.data_end
    assert stray.data_end_source == ("exported_at" if meta else "latest lead creation")
    if not meta:
        assert stray.data_end == stray.leads["created_at"].max()
    pd.testing.assert_frame_equal(_matured_snapshots(stray), _matured_snapshots(clean))
    late = [b for b in stray.report.breaches if b.rule.startswith("occurred after the data end")]
    assert sum(b.count for b in late) == sum(b.count for b in clean.report.breaches if b.rule.startswith("occurred after")) + 1


# -- repeated interactions ----------------------------------------------------------------


def test_repeated_interactions_are_collapsed_to_one_and_counted() -> None:
    events = pd.DataFrame(
        {
            "lead_id": ["A", "A", "A", "A", "B", "B"],
            "occurred_at": ["2024-01-02T10:00:00Z", "2024-01-02T10:00:00Z", "2024-01-02T11:00:00+01:00", "2024-01-02T10:00:00Z",
                            "2024-01-11", "2024-01-11"],
            "type": ["page_view", "page_view", "page_view", "email_open", "page_view", "demo_request"],
            "channel": ["web", "web", "email", "email", "web", "web"],
        }
    )
    data = validate(_leads(), events, SPEC)
    breach = _breaches(data)[("interactions", "repeat the lead_id, type and occurred_at of an earlier row")]
    # A's page view at 10:00 UTC is there three times (one written in +01:00): one kept, two set aside.
    assert (breach.count, breach.examples) == (2, ["A"])
    assert breach.action.startswith("collapsed")
    kept = data.interactions[data.interactions["lead_id"] == "A"]
    assert sorted(kept["type"]) == ["email_open", "page_view"]
    assert kept.loc[kept["type"] == "page_view", "channel"].tolist() == ["web"]  # the first row stays
    assert len(data.interactions[data.interactions["lead_id"] == "B"]) == 2  # other types are no repeat
    assert (data.quarantine["rule"] == breach.rule).sum() == 2
    assert len(data.interactions) + len(data.quarantine) == len(events)
    assert data.report.quarantined_rows == 2


# -- attribute tables: an empty key is counted, not dropped ---------------------------------


def _crm_export(folder: Path, **data: object):
    """Leads with an account key, and an accounts table with two rows whose key is empty."""
    from sources.loader import load_project_data

    pd.DataFrame(
        {"Lead ID": ["A1", "A2", "A3"], "Created": ["2024-01-02", "2024-01-03", "2024-01-04"],
         # Converted before the last lead was created: inside the data without an exported_at too.
         "Won On": ["2024-01-03", "", ""], "Account": ["acc-1", "acc-2", ""]}
    ).to_csv(folder / "leads.csv", index=False)
    pd.DataFrame({"id": ["acc-1", "", "acc-2", " "], "Tier": ["gold", "bronze", "silver", "tin"]}).to_csv(
        folder / "accounts.csv", index=False
    )
    config = ProjectConfig.model_validate(
        {
            "data": {
                **data,
                "leads": {
                    "source": str(folder / "leads.csv"),
                    "id": "Lead ID",
                    "created_at": "Created",
                    "outcome": {"column": "Won On", "kind": "date"},
                },
                "columns": {"categorical": ["Tier"]},
                "attributes": [{"source": str(folder / "accounts.csv"), "key": "Account", "on": "id", "columns": ["Tier"]}],
            }
        }
    )
    return load_project_data(config.data, config.features).dataset  # type: ignore[arg-type]


def test_attribute_rows_with_an_empty_key_are_quarantined_with_their_row(tmp_path: Path) -> None:
    data = _crm_export(tmp_path)
    found = {b.rule: b for b in data.report.breaches if b.table == "data.attributes.0"}
    breach = found["have an empty 'id' (no lead can match them)"]
    assert (breach.count, breach.examples, breach.action) == (2, ["row 2", "row 4"], "quarantined")
    set_aside = data.quarantine[data.quarantine["table"] == "data.attributes.0"]
    assert sorted(set_aside["tier"]) == ["bronze", "tin"]
    assert set_aside["id"].isna().all()
    assert data.leads.set_index("lead_id")["tier"].to_dict() == {"A1": "gold", "A2": "silver", "A3": None}


def test_data_section_exported_at_is_the_data_end(tmp_path: Path) -> None:
    data = _crm_export(tmp_path, exported_at="2024-02-01T00:00:00Z")
    assert data.data_end == pd.Timestamp("2024-02-01", tz="UTC")
    assert data.report.data_end_source == "exported_at"


# -- validation labels mature before the test period ----------------------------------------


def test_validation_labels_close_before_the_test_period(simulated_dataset) -> None:
    from training.pipeline import time_split

    config = ProjectConfig().training
    snaps = _matured_snapshots(simulated_dataset)
    train, valid, test, split = time_split(snaps, simulated_dataset.leads, config)
    horizon = pd.Timedelta(days=config.horizon_days)
    valid_start, test_start = pd.Timestamp(split["valid_start"]), pd.Timestamp(split["test_start"])
    assert (train["as_of"] + horizon <= valid_start).all()
    assert (valid["as_of"] + horizon <= test_start).all()
    # No validation conversion happens inside the test period.
    converted = simulated_dataset.leads.set_index("lead_id")["converted_at"]
    positives = valid.loc[valid["label"] == 1, "lead_id"]
    assert (converted.reindex(positives).to_numpy() < test_start).all()
    # What was left out is counted: every snapshot of a period's leads is used or excluded.
    created = simulated_dataset.leads.set_index("lead_id")["created_at"].reindex(snaps["lead_id"]).to_numpy()
    n_valid_period = int(((created >= valid_start) & (created < test_start)).sum())
    n_train_period = int((created < valid_start).sum())
    excluded = split["excluded_snapshots"]
    assert excluded["validation"] == n_valid_period - len(valid) > 0
    assert excluded["train"] == n_train_period - len(train) > 0
    # Validation still holds its share of the leads.
    n_leads = snaps["lead_id"].nunique()
    assert valid["lead_id"].nunique() == int(n_leads * config.valid_fraction)


def test_training_states_the_data_end_and_what_the_split_left_out(training_result) -> None:
    r = training_result
    assert r.split["data_end_source"] == "exported_at"
    assert r.model.meta.training["data"]["data_end_source"] == "exported_at"
    assert r.model.meta.training["split"]["excluded_snapshots"] == r.split["excluded_snapshots"]
    horizon = pd.Timedelta(days=r.model.meta.horizon_days)
    assert (r.valid.snapshots["as_of"] + horizon <= pd.Timestamp(r.split["test_start"])).all()


# -- a static model is served with its own calibration --------------------------------------


def _static_rows(make_export, n: int, seed: int):
    from features.contract import validate_static
    from features.engine import lead_attribute_rows

    spec = FeatureSpec(categorical=["source"], numeric=["minutes", "visits"], email_column=None, interactions=False)
    export = make_export(n, seed).drop(columns=["status"]).assign(order=np.arange(n, dtype=float))
    data = validate_static(export, spec)
    return data, spec, lead_attribute_rows(data.leads, spec)


def test_static_booster_is_refit_on_every_row_and_calibrated_by_its_own_recipe(static_export) -> None:
    import lightgbm as lgb

    from model.bundle import encode_matrix
    from training.crossfit import cross_fitted_raw, latest_blocks
    from training.pipeline import fit_calibration, lightgbm_params
    from training.static import fit_static_booster, static_category_levels

    data, spec, rows = _static_rows(static_export, 900, 3)
    config = ProjectConfig().training
    y = data.leads["converted"].to_numpy()
    order = data.leads["order"].to_numpy()
    fitted = fit_static_booster(rows, y, spec, config, order=order)
    names = spec.feature_names()
    # Refit on every row (the newest, inner-validation rows included) with the early-stopped trees.
    assert fitted.booster.num_trees() == fitted.best_iteration
    assert fitted.levels == static_category_levels(rows, spec)
    params = {**lightgbm_params(config, names), "num_threads": 1}
    matrix = encode_matrix(rows, names, fitted.levels)
    categorical = [names.index(c) for c in spec.categorical_features()]

    def fit_on(mask):
        booster = lgb.train(params, lgb.Dataset(matrix[mask], y[mask], feature_name=names, categorical_feature=categorical),
                            num_boost_round=fitted.best_iteration)  # fmt: skip
        return lambda where: booster.predict(matrix[where], raw_score=True)

    # The calibration map was fit on the same recipe's scores of the latest rows, each scored by
    # a fit that never saw it, and `valid_probability` is those scores calibrated.
    held, raw = cross_fitted_raw(fit_on, latest_blocks(order.astype(float)))
    calibration, _ = fit_calibration(raw, y[held], config.seed)
    assert calibration == fitted.calibration
    np.testing.assert_allclose(fitted.calibration.apply(raw), fitted.valid_probability, rtol=1e-9)


def test_static_booster_too_small_to_cross_fit_keeps_the_early_stopped_one(static_export) -> None:
    from model.bundle import encode_matrix
    from training.pipeline import _take, fit_calibration
    from training.static import fit_static_booster

    data, spec, rows = _static_rows(static_export, 150, 5)  # 45 latest rows: fewer than a cross-fit needs
    config = ProjectConfig().training
    y = data.leads["converted"].to_numpy()
    order = data.leads["order"].to_numpy()
    fitted = fit_static_booster(rows, y, spec, config, order=order)
    n_valid = int(round(len(y) * config.valid_fraction))
    held_out = np.argsort(order, kind="stable")[-n_valid:]
    raw = fitted.booster.predict(encode_matrix(_take(rows, held_out), spec.feature_names(), fitted.levels), raw_score=True)
    # Calibrated on the served booster's own scores of the rows it never saw.
    np.testing.assert_allclose(fitted.calibration.apply(raw), fitted.valid_probability, rtol=1e-9)
    assert fit_calibration(raw, y[held_out], config.seed)[0] == fitted.calibration


def test_static_bundle_probabilities_are_those_of_its_booster(static_export) -> None:
    from features.grid import PointGrid
    from model.bundle import encode_matrix
    from training.pipeline import _take
    from training.static import evaluation_plan, fit_static_booster, run_static_training

    data, spec, rows = _static_rows(static_export, 900, 4)
    config = ProjectConfig().training.model_copy(update={"n_bootstrap": 0})
    grid = PointGrid.model_validate(
        {"name": "t", "mql_threshold": 10, "rules": [{"label": "Referral", "points": 10, "feature": "source", "in": ["Referral"]}]}
    )
    plan = evaluation_plan(data, config)
    result = run_static_training(data, spec, config, grid, plan)
    train = plan.splits[0][0]
    fitted = fit_static_booster(_take(rows, train), data.leads["converted"].to_numpy()[train], spec, config,
                                order=data.leads["order"].to_numpy()[train])  # fmt: skip
    model = result.model
    names = spec.feature_names()
    # The bundle serves the measured booster with the calibration fit for it ...
    np.testing.assert_allclose(
        model.booster.predict(encode_matrix(rows, names, model.meta.categorical_levels), raw_score=True),
        fitted.booster.predict(encode_matrix(rows, names, fitted.levels), raw_score=True),
    )
    assert model.meta.calibration == fitted.calibration
    # ... and its tiers come from that recipe's calibrated probabilities of rows it had not seen.
    assert model.meta.tiers.hot == pytest.approx(float(np.quantile(fitted.valid_probability, 1 - config.hot_share)))


def test_too_few_labels_names_a_setting_computed_from_the_data(simulated_dataset) -> None:
    """The refusal names a horizon and what it would give, and those figures are the split's own."""
    import re

    from sources.grids import load_grid
    from training.pipeline import NotEnoughDataError, run_training, split_snapshots

    config = ProjectConfig().training.model_copy(update={"horizon_days": 240.0})
    with pytest.raises(NotEnoughDataError) as refused:
        run_training(simulated_dataset, ProjectConfig().features, config, load_grid("default"))
    said = re.search(r"horizon_days: (\d+) would give ([\d,]+) training snapshots with ([\d,]+) conversions", str(refused.value))
    assert said, str(refused.value)
    horizon, n, conversions = float(said[1]), int(said[2].replace(",", "")), int(said[3].replace(",", ""))
    _snaps, train, _valid, _test, _bounds = split_snapshots(simulated_dataset, config.model_copy(update={"horizon_days": horizon}))
    assert (len(train), int(train["label"].sum())) == (n, conversions)
