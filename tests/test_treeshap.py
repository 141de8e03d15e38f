"""Exact TreeSHAP tables (`model.treeshap`) against LightGBM's own `pred_contrib`.

Every test compares on every row: the largest absolute difference must stay within 1e-9
(rounding of a different summation order is ~1e-14), with missing values, zeros, unseen and
missing categories, each missing type, deep trees that fall back, and generated rows.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.bundle import ScoringModel
from model.treeshap import ExactContributions

TOLERANCE = 1e-9


def assert_same_as_lightgbm(booster: lgb.Booster, matrix: np.ndarray, exact: ExactContributions | None = None) -> float:
    """Assert `ExactContributions` equals `pred_contrib` on every row; returns the largest difference."""
    exact = exact or ExactContributions.from_booster(booster)
    ours = exact.contributions(matrix)
    theirs = booster.predict(matrix, pred_contrib=True)
    assert ours.shape == theirs.shape
    worst = float(np.max(np.abs(ours - theirs))) if len(matrix) else 0.0
    assert worst <= TOLERANCE, f"largest difference {worst:.3g} at row {int(np.argmax(np.abs(ours - theirs).max(axis=1)))}"
    return worst


def split_kinds(booster: lgb.Booster) -> set[tuple[str, str]]:
    """(decision type, missing type) of every split of the model."""
    kinds: set[tuple[str, str]] = set()

    def walk(node: dict) -> None:
        if "split_index" in node:
            kinds.add((node["decision_type"], node["missing_type"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return kinds


# -- the project's default model ----------------------------------------------------------------


def test_default_model_every_row_of_every_period(training_result) -> None:
    model = training_result.model
    exact = ExactContributions.from_booster(model.booster)
    assert exact.tabulated == exact.n_trees > 100  # depth 3: every tree has a table, none falls back
    assert any(decision == "==" for decision, _ in split_kinds(model.booster)), "the default model splits on categories"
    matrix = np.vstack([training_result.train.matrix, training_result.valid.matrix, training_result.test.matrix])
    assert_same_as_lightgbm(model.booster, matrix, exact)


def test_default_model_missing_values_zeros_and_categories(training_result) -> None:
    """Every column missing, zero or an impossible category code, row by row and all at once."""
    model = training_result.model
    base = training_result.test.matrix[:200]
    categorical = [model.feature_names.index(c) for c in model.meta.categorical_levels]
    assert categorical, "the default model has categorical features"
    variants = [base]
    for j in range(base.shape[1]):
        for value in (np.nan, 0.0, -1.0):
            changed = base.copy()
            changed[:, j] = value
            variants.append(changed)
    for j in categorical:
        # A code past the training levels (a category LightGBM never saw), and a fractional one.
        for value in (len(model.meta.categorical_levels[model.feature_names[j]]) + 3.0, 2.5, 1e12):
            changed = base.copy()
            changed[:, j] = value
            variants.append(changed)
    all_missing = np.full_like(base[:5], np.nan)
    variants.append(all_missing)
    assert_same_as_lightgbm(model.booster, np.vstack(variants))


def test_bundle_contributions_are_the_exact_tables(trained_bundle: Path, simulated_dataset) -> None:
    """`ScoringModel.contributions` (the served reasons) on encoded rows, unseen and missing categories included."""
    import pandas as pd

    from features.engine import snapshot_features

    model = ScoringModel.load(trained_bundle)
    leads = simulated_dataset.leads.head(300).copy()
    categorical = list(model.meta.categorical_levels)
    leads.loc[leads.index[:40], categorical[0]] = "a level never seen in training"
    leads.loc[leads.index[40:80], categorical[-1]] = None
    snapshots = pd.DataFrame({"lead_id": leads["lead_id"], "as_of": leads["created_at"] + pd.Timedelta(days=20)})
    rows = snapshot_features(leads, simulated_dataset.interactions, snapshots, model.spec)
    matrix = model.encode(rows)
    assert np.isnan(matrix[:40, model.feature_names.index(categorical[0])]).all()
    theirs = model.booster.predict(matrix, pred_contrib=True)
    for block in (matrix, matrix[:1]):  # a batch and the one lead of a request
        ours = model.contributions(block)
        assert np.max(np.abs(ours - theirs[: len(block)])) <= TOLERANCE
    np.testing.assert_allclose(model.contributions(matrix).sum(axis=1), model.raw(matrix), rtol=0, atol=1e-9)


def test_contribution_depends_on_the_decision_pattern_not_the_leaf(training_result) -> None:
    """Rows reaching one leaf can get different TreeSHAP values; rows with one decision pattern cannot."""
    booster = training_result.model.booster
    matrix = np.vstack([training_result.train.matrix, training_result.test.matrix])[:3000]
    exact = ExactContributions.from_booster(booster)
    patterns = exact._patterns(np.ascontiguousarray(matrix.T))  # (trees, rows), every tree tabulated
    leaves = booster.predict(matrix, pred_leaf=True)
    same_leaf_differs = 0
    for t in range(0, booster.num_trees(), 10):
        per_tree = booster.predict(matrix, pred_contrib=True, start_iteration=t, num_iteration=1)
        for group_key, differs_ok in ((leaves[:, t], True), (patterns[t], False)):
            for key in np.unique(group_key):
                rows = per_tree[group_key == key]
                spread = float(np.max(rows.max(axis=0) - rows.min(axis=0)))
                if differs_ok:
                    same_leaf_differs += spread > 1e-6
                else:
                    assert spread <= 1e-12, f"tree {t}: one decision pattern, contributions differ by {spread:.3g}"
    assert same_leaf_differs > 0, "no leaf whose rows got different contributions: the leaf alone would do"


# -- synthetic models: each missing type, categories, deep trees ---------------------------------


def synthetic_data(n: int = 4_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Columns: 0-2 numeric (with NaN and exact zeros), 3 categorical (8 levels), 4 categorical (30 levels)."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=(n, 3)), rng.integers(0, 8, n), rng.integers(0, 30, n)]).astype(np.float64)
    x[rng.random(n) < 0.15, 0] = np.nan
    x[rng.random(n) < 0.2, 1] = 0.0
    x[rng.random(n) < 0.1, 3] = np.nan
    logit = np.nan_to_num(x[:, 0], nan=1.0) - x[:, 1] * x[:, 2] + (x[:, 3] == 2) - 0.8 * (x[:, 4] % 3 == 0)
    return x, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


@cache
def synthetic_booster(variant: str, rounds: int = 60) -> lgb.Booster:
    params = {
        "objective": "binary", "verbose": -1, "seed": 1, "num_leaves": 7, "max_depth": 3, "learning_rate": 0.1,
        "min_data_per_group": 10, "cat_smooth": 1.0, "max_cat_to_onehot": 4, "num_threads": 1,
    }
    params.update(
        {
            "nan": {},
            "zero_as_missing": {"zero_as_missing": True},
            "no_missing": {"use_missing": False},
            "deep": {"num_leaves": 31, "max_depth": -1, "min_data_in_leaf": 5},
        }[variant]
    )
    x, y = synthetic_data()
    return lgb.train(params, lgb.Dataset(x, y, categorical_feature=[3, 4]), rounds)


def awkward_rows(n: int = 400, seed: int = 5) -> np.ndarray:
    """Rows LightGBM decides on by its special rules: NaN, +-0, tiny, infinite, negative and unseen codes."""
    x, _ = synthetic_data(n, seed)
    rng = np.random.default_rng(seed)
    zero = float(np.float32(1e-35))  # LightGBM's zero threshold, a float literal
    specials = np.array([np.nan, 0.0, -0.0, 1e-40, -1e-40, zero, -zero, np.nextafter(zero, 1), -np.nextafter(zero, 1),
                         np.inf, -np.inf, -1.0, -0.5, 2.7, 31.0, 1e12, 2.0**31])
    mask = rng.random(x.shape) < 0.3
    x[mask] = rng.choice(specials, mask.sum())
    return x


@pytest.mark.parametrize(
    ("variant", "missing_type"), [("nan", "NaN"), ("zero_as_missing", "Zero"), ("no_missing", "None")]
)
def test_synthetic_missing_types_and_category_splits(variant: str, missing_type: str) -> None:
    booster = synthetic_booster(variant)
    kinds = split_kinds(booster)
    assert ("<=", missing_type) in kinds, kinds
    assert any(decision == "==" for decision, _ in kinds), "no categorical split to test"
    x, _ = synthetic_data(800, seed=9)
    assert_same_as_lightgbm(booster, np.vstack([x, awkward_rows()]))


def test_deep_trees_fall_back_to_pred_contrib_and_say_so_once(caplog: pytest.LogCaptureFixture) -> None:
    booster = synthetic_booster("deep", rounds=15)
    with caplog.at_level(logging.WARNING, logger="model.treeshap"):
        exact = ExactContributions.from_booster(booster)
        assert_same_as_lightgbm(booster, awkward_rows(), exact)
        assert_same_as_lightgbm(booster, awkward_rows(seed=6), exact)
    assert exact.tabulated == 0
    assert len([r for r in caplog.records if "pred_contrib" in r.getMessage()]) == 1


def test_forest_of_small_and_deep_trees() -> None:
    """Shallow trees from tables, deep ones (a continued training run) from LightGBM, in one sum."""
    x, y = synthetic_data()
    shallow = synthetic_booster("nan", rounds=10)
    deep_params = {"objective": "binary", "verbose": -1, "num_leaves": 31, "max_depth": -1, "num_threads": 1}
    mixed = lgb.train(deep_params, lgb.Dataset(x, y, categorical_feature=[3, 4]), 8, init_model=shallow)
    more = lgb.train({**deep_params, "num_leaves": 5, "max_depth": 2}, lgb.Dataset(x, y, categorical_feature=[3, 4]), 6,
                     init_model=mixed)
    exact = ExactContributions.from_booster(more)
    assert (exact.tabulated, exact.n_trees) == (16, 24)
    assert_same_as_lightgbm(more, np.vstack([x[:500], awkward_rows()]), exact)


def _grouped_by_lightgbm(booster: lgb.Booster, matrix: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    contrib = booster.predict(matrix, pred_contrib=True)[:, :-1]
    return np.stack([contrib[:, groups == g].sum(axis=1) for g in range(n_groups)], axis=1)


def test_group_sums_are_lightgbm_contributions_summed_by_group(training_result) -> None:
    model = training_result.model
    matrix = np.vstack([training_result.valid.matrix, training_result.test.matrix[:500]])
    groups = np.arange(matrix.shape[1]) % 3  # three groups that mix attributes and behaviour
    exact = ExactContributions.from_booster(model.booster)

    sums = exact.group_sums(matrix, groups, 3)

    assert sums.shape == (len(matrix), 3)
    np.testing.assert_allclose(sums, _grouped_by_lightgbm(model.booster, matrix, groups, 3), rtol=0, atol=TOLERANCE)
    # Another grouping of the same forest is its own (remapped tables are kept per grouping).
    np.testing.assert_allclose(exact.group_sums(matrix, np.zeros_like(groups), 1)[:, 0], sums.sum(axis=1), rtol=0, atol=TOLERANCE)


def _small_then_deep_trees() -> lgb.Booster:
    """10 tabulated trees, then 8 deep ones (a continued training run) explained by LightGBM."""
    x, y = synthetic_data()
    shallow = synthetic_booster("nan", rounds=10)
    deep_params = {"objective": "binary", "verbose": -1, "num_leaves": 31, "max_depth": -1, "num_threads": 1}
    return lgb.train(deep_params, lgb.Dataset(x, y, categorical_feature=[3, 4]), 8, init_model=shallow)


def test_group_sums_of_a_forest_of_small_and_deep_trees() -> None:
    mixed = _small_then_deep_trees()
    exact = ExactContributions.from_booster(mixed)
    rows = np.vstack([synthetic_data()[0][:300], awkward_rows()])
    groups = np.array([0, 1, 1, 0, 1])

    assert exact.tabulated < exact.n_trees
    np.testing.assert_allclose(exact.group_sums(rows, groups, 2), _grouped_by_lightgbm(mixed, rows, groups, 2), rtol=0, atol=TOLERANCE)


def _assert_combined_equals_separate(exact: ExactContributions, rows: np.ndarray, groups: np.ndarray, n_groups: int) -> None:
    contributions, sums = exact.contributions_with_group_sums(rows, groups, n_groups)
    # The same bits as each call alone: the tables add the same values in the same tree order.
    assert np.array_equal(contributions, exact.contributions(rows))
    assert np.array_equal(sums, exact.group_sums(rows, groups, n_groups))
    assert contributions.flags.c_contiguous and sums.flags.c_contiguous


def test_contributions_with_group_sums_equal_each_call_to_the_bit(training_result) -> None:
    model = training_result.model
    matrix = np.vstack([training_result.valid.matrix[:300], training_result.test.matrix[:300]])
    exact = ExactContributions.from_booster(model.booster)
    for groups, n_groups in ((model._fit_groups, 2), (np.arange(matrix.shape[1]) % 3, 3)):
        _assert_combined_equals_separate(exact, matrix, groups, n_groups)
        _assert_combined_equals_separate(exact, matrix[:1], groups, n_groups)
    contributions, (fit, engagement) = model.contributions_and_fit_engagement(matrix)
    assert np.array_equal(contributions, model.contributions(matrix))
    assert all(np.array_equal(a, b) for a, b in zip((fit, engagement), model.fit_engagement_of(matrix), strict=True))


def test_contributions_with_group_sums_of_a_forest_of_small_and_deep_trees() -> None:
    exact = ExactContributions.from_booster(_small_then_deep_trees())
    assert exact.tabulated < exact.n_trees
    _assert_combined_equals_separate(exact, np.vstack([synthetic_data()[0][:300], awkward_rows()]), np.array([0, 1, 1, 0, 1]), 2)


def test_group_sums_refuse_a_group_outside_the_count() -> None:
    exact = ExactContributions.from_booster(synthetic_booster("nan"))
    with pytest.raises(ValueError, match="a group in 0..1 for each of 5 features"):
        exact.group_sums(np.zeros((3, 5)), np.array([0, 1, 2, 0, 1]), 2)


def test_rejects_a_matrix_of_the_wrong_width() -> None:
    exact = ExactContributions.from_booster(synthetic_booster("nan"))
    with pytest.raises(ValueError, match="5 feature columns, got shape"):
        exact.contributions(np.zeros((3, 4)))


def test_no_rows_give_no_rows() -> None:
    assert ExactContributions.from_booster(synthetic_booster("nan")).contributions(np.zeros((0, 5))).shape == (0, 6)


# -- generated rows ------------------------------------------------------------------------------


@cache
def thresholds(booster: lgb.Booster) -> list[float]:
    """Every numeric threshold of the model: values exactly on a split are the ones `<=` decides."""
    found: list[float] = []

    def walk(node: dict) -> None:
        if "split_index" in node:
            if node["decision_type"] == "<=":
                found.append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return sorted(set(found))


def cell_values(on_splits: list[float]) -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=-3, max_value=3),
        st.sampled_from(on_splits).flatmap(lambda t: st.sampled_from([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf)])),
        st.integers(min_value=-2, max_value=40).map(float),
        st.sampled_from([0.0, -0.0, 1e-36, -1e-36, np.nan]),
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data(), variant=st.sampled_from(["nan", "zero_as_missing", "no_missing"]))
def test_generated_rows_synthetic(data: st.DataObject, variant: str) -> None:
    booster = synthetic_booster(variant)
    rows = data.draw(st.lists(st.lists(cell_values(thresholds(booster)), min_size=5, max_size=5), min_size=1, max_size=20))
    assert_same_as_lightgbm(booster, np.asarray(rows, dtype=np.float64))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_generated_rows_default_model(training_result, data: st.DataObject) -> None:
    booster = training_result.model.booster
    base = training_result.test.matrix
    start = data.draw(st.integers(min_value=0, max_value=len(base) - 10))
    rows = base[start : start + 10].copy()
    cells = data.draw(st.lists(st.tuples(st.integers(0, 9), st.integers(0, rows.shape[1] - 1), cell_values(thresholds(booster))),
                               max_size=40))
    for i, j, value in cells:
        rows[i, j] = value
    assert_same_as_lightgbm(booster, rows)


# -- batch reasons (model.scoring.score_table) ---------------------------------------------------


def test_score_table_top_reason_is_the_first_reason_up_of_each_lead(training_result, simulated_dataset) -> None:
    import pandas as pd

    from features.engine import snapshot_features
    from model.scoring import score_table

    model, data = training_result.model, simulated_dataset
    as_of = data.data_end - pd.Timedelta(days=60)
    leads = data.leads[data.leads["created_at"] <= as_of].head(300)
    table = score_table(model, leads, data.interactions, as_of.to_pydatetime(), with_reasons=True, language="fr")
    snapshots = pd.DataFrame({"lead_id": leads["lead_id"].reset_index(drop=True), "as_of": as_of})
    rows = snapshot_features(leads, data.interactions, snapshots, model.spec)
    contributions = model.booster.predict(model.encode(rows), pred_contrib=True)
    expected = []
    for i in range(len(leads)):
        up, _ = model.reasons(contributions[i], rows.row(i), top_k=1, language="fr")
        expected.append(up[0].label if up else None)
    assert table["top_reason"].tolist() == expected
    assert sum(label is not None for label in expected) > 100


def _tied_contributions(n_features: int, n: int, seed: int) -> np.ndarray:
    # Contributions on a coarse grid: many exact ties; rows 0-19 lift nothing, rows 20-29 are zeros.
    rng = np.random.default_rng(seed)
    contributions = rng.integers(-2, 3, size=(n, n_features + 1)).astype(np.float64) * 0.25
    contributions[:20, :-1] = -np.abs(contributions[:20, :-1])
    contributions[20:30, :-1] = 0.0
    return contributions


def test_strongest_reasons_up_break_ties_as_reasons_does(training_result) -> None:
    """Contributions on a coarse grid (many exact ties, zeros, all-negative rows) pick what `reasons` picks."""
    from model.scoring import strongest_reasons_up

    model, rows = training_result.model, training_result.test.rows
    n = 200
    contributions = _tied_contributions(len(model.feature_names), n, seed=4)
    expected = []
    for i in range(n):
        up, _ = model.reasons(contributions[i], rows.row(i), top_k=1)
        expected.append(up[0].label if up else None)
    assert strongest_reasons_up(model, contributions, rows) == expected  # reads row(i) of the first n rows only
    assert expected[:30] == [None] * 30



# -- the compiled kernel: any number of rows, any layout, compiled once ---------------------------


def test_one_row_and_many_rows_give_the_same_contributions_to_the_bit(training_result) -> None:
    """A row's contributions do not depend on the rows explained with it: the served lead's equal the batch's."""
    booster = training_result.model.booster
    x, _ = synthetic_data(200, seed=11)
    for booster_, matrix in ((booster, training_result.test.matrix[:300]), (synthetic_booster("nan"), np.vstack([x, awkward_rows(100)]))):
        exact = ExactContributions.from_booster(booster_)
        batch = exact.contributions(matrix)
        row_by_row = np.vstack([exact.contributions(matrix[i : i + 1]) for i in range(len(matrix))])
        threes = np.vstack([exact.contributions(matrix[i : i + 3]) for i in range(0, len(matrix), 3)])
        np.testing.assert_array_equal(batch, row_by_row)
        np.testing.assert_array_equal(batch, threes)


def test_float32_and_non_contiguous_matrices_give_the_same_contributions(training_result) -> None:
    exact = ExactContributions.from_booster(training_result.model.booster)
    matrix = np.vstack([training_result.test.matrix[:200], np.full((3, training_result.test.matrix.shape[1]), np.nan)])
    expected = exact.contributions(matrix)
    np.testing.assert_array_equal(exact.contributions(np.asfortranarray(matrix)), expected)
    wider = np.repeat(matrix, 2, axis=1)  # every other column: a strided view
    np.testing.assert_array_equal(exact.contributions(wider[:, ::2]), expected)
    np.testing.assert_array_equal(exact.contributions(matrix[::-1])[::-1], expected)
    as_float32 = matrix.astype(np.float32)
    np.testing.assert_array_equal(exact.contributions(as_float32), exact.contributions(as_float32.astype(np.float64)))
    assert_same_as_lightgbm(training_result.model.booster, as_float32.astype(np.float64), exact)


COMPILED_AT_BUILD = """
import numpy as np, lightgbm as lgb
from model.treeshap import ExactContributions, _tabulated_contributions
rng = np.random.default_rng(0)
x = np.column_stack([rng.normal(size=(500, 2)), rng.integers(0, 5, 500)])
booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4, "min_data_per_group": 5},
                    lgb.Dataset(x, (x[:, 0] + (x[:, 2] == 1) > 0.5).astype(int), categorical_feature=[2]), 5)
before = len(_tabulated_contributions.signatures)
exact = ExactContributions.from_booster(booster)
built = len(_tabulated_contributions.signatures)
for matrix in (x, x[:1], x[:3], x.astype(np.float32), np.asfortranarray(x), x[::2]):
    exact.contributions(matrix)
print(before, built, len(_tabulated_contributions.signatures))
"""


def test_the_kernel_is_compiled_when_the_tables_are_built_and_only_once() -> None:
    """The first request does not compile: `from_booster` did, for the one layout every call is given."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", COMPILED_AT_BUILD], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.split() == ["0", "1", "1"], done.stdout + done.stderr


@cache
def categorical_booster() -> lgb.Booster:
    """Trees of depth 3 that split on categories at several nodes, on one feature and on two."""
    rng = np.random.default_rng(8)
    n = 6_000
    x = np.column_stack([rng.integers(0, 40, n), rng.integers(0, 12, n), rng.normal(size=n)]).astype(np.float64)
    x[rng.random(n) < 0.1, 0] = np.nan
    logit = 1.5 * np.isin(x[:, 0], [1, 4, 9, 16, 25, 36]) - 1.2 * (x[:, 1] % 4 == 1) + 0.8 * np.isin(x[:, 0], [2, 3, 5, 7, 11]) * (x[:, 1] < 6) + 0.3 * x[:, 2]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {
        "objective": "binary", "verbose": -1, "seed": 2, "num_leaves": 8, "max_depth": 3, "learning_rate": 0.2,
        "min_data_per_group": 5, "cat_smooth": 1.0, "max_cat_to_onehot": 4, "num_threads": 1, "min_data_in_leaf": 10,
    }
    return lgb.train(params, lgb.Dataset(x, y, categorical_feature=[0, 1]), 40)


def test_categorical_splits_at_several_nodes_of_a_tree() -> None:
    booster = categorical_booster()
    per_tree = []
    for tree in booster.dump_model()["tree_info"]:
        features: list[int] = []

        def walk(node: dict, features: list[int] = features) -> None:
            if "split_index" in node:
                if node["decision_type"] == "==":
                    features.append(node["split_feature"])
                walk(node["left_child"])
                walk(node["right_child"])

        walk(tree["tree_structure"])
        per_tree.append(features)
    assert any(len(f) > len(set(f)) for f in per_tree), "no tree splits twice on one categorical feature"
    assert any(set(f) == {0, 1} for f in per_tree), "no tree splits on both categorical features"
    exact = ExactContributions.from_booster(booster)
    assert exact.tabulated == exact.n_trees
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.integers(-2, 45, 2_000), rng.integers(-1, 14, 2_000), rng.normal(size=2_000)]).astype(np.float64)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[:50, 0] = rng.choice([0.5, 39.9, -0.5, -1e-40, 1e9, np.inf, -np.inf], 50)
    assert_same_as_lightgbm(booster, x, exact)


def test_rejects_max_nodes_past_the_slots_of_a_tree() -> None:
    with pytest.raises(ValueError, match="max_nodes=9: .* choose 0..8"):
        ExactContributions.from_booster(synthetic_booster("nan"), max_nodes=9)


def test_reasons_up_rank_as_reasons_does(training_result) -> None:
    """The top 3 reasons up of many rows at once, ties included, are `reasons(top_k=3)`'s, None-padded."""
    from model.scoring import reasons_up

    model, rows = training_result.model, training_result.test.rows
    n = 200
    contributions = _tied_contributions(len(model.feature_names), n, seed=5)
    contributions[30:40, :-1] = np.where(np.arange(len(model.feature_names)) == 0, 1.0, -1.0)  # one driver lifts it
    expected = []
    for i in range(n):
        up, _ = model.reasons(contributions[i], rows.row(i), top_k=3, language="fr")
        expected.append([r.label for r in up] + [None] * (3 - len(up)))
    ranks = reasons_up(model, contributions, rows, "fr", top_k=3)
    assert [list(labels) for labels in zip(*ranks, strict=True)] == expected
    assert sum(labels[2] is not None for labels in expected) > 50 and expected[35][1] is None
    with pytest.raises(ValueError, match="top_k: at least 1"):
        reasons_up(model, contributions, rows, top_k=0)


def test_reasons_up_phrase_each_kind_of_attribute_value_as_reasons_does(training_result) -> None:
    """Attribute labels are phrased once per distinct value: -0.0 and 0.0, None and NaN stay apart, and each row's is its own."""
    from dataclasses import replace

    from model.scoring import _distinct_values, reasons_up

    model, test_rows = training_result.model, training_result.test.rows
    n = 120
    categorical = {k: np.asarray(v[:n], dtype=object).copy() for k, v in test_rows.categorical.items()}
    numeric = {k: np.asarray(v[:n], dtype=np.float64).copy() for k, v in test_rows.numeric.items()}
    numeric["employee_count"][:40] = np.tile([0.0, -0.0, np.nan, 671.0], 10)
    categorical["industry"][40:80] = np.tile(np.array([None, np.nan, "software", "software "], dtype=object), 10)
    rows = replace(test_rows, categorical=categorical, numeric=numeric, category_codes={}, behaviour=None, behaviour_names=())
    # Every row's strongest lift is an attribute: employee_count on the first 40 rows, industry on the next 40.
    contributions = np.full((n, len(model.feature_names) + 1), -0.01)
    contributions[:40, model.feature_names.index("employee_count")] = 2.0
    contributions[40:80, model.feature_names.index("industry")] = 2.0
    contributions[:, model.feature_names.index("seniority")] = 1.0
    expected = []
    for i in range(n):
        up, _ = model.reasons(contributions[i], rows.row(i), top_k=2)
        expected.append([r.label for r in up] + [None] * (2 - len(up)))
    ranks = reasons_up(model, contributions, rows, top_k=2)

    assert [list(labels) for labels in zip(*ranks, strict=True)] == expected
    codes, distinct = _distinct_values(numeric["employee_count"][:4])
    assert len(set(codes.tolist())) == len(distinct) == 4  # 0.0, -0.0, NaN, 671.0: none merged
    codes, distinct = _distinct_values(categorical["industry"][40:44])
    assert len(set(codes.tolist())) == 4 and distinct[codes[2]] == "software"
