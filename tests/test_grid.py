"""Code tests of the point grid: validation, YAML round trip, both scorers and their parity."""

from __future__ import annotations

import functools
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from features.grid import GridRule, MissingFeaturesError, PointGrid
from sources.grids import load_grid, save_grid

DEFAULT_GRID = "default"  # the grid leadscore ships (sources/builtin_grids/default.yaml)

NO_SIGNAL_LEAD: dict[str, object] = {
    "seniority": None,
    "company_size": None,
    "industry": None,
    "n_pricing_page_view_90d": 0,
    "n_whitepaper_download_total": 0,
    "n_email_open_30d": 0,
    "n_demo_request_total": 0,
    "email_domain_kind": "corporate",
    "n_unsubscribe_total": 0,
}


def lead(**changes: object) -> dict[str, object]:
    """A lead of the default grid's features that scores nothing, with some values changed."""
    return {**NO_SIGNAL_LEAD, **changes}


def make_grid(*rules: dict[str, object], threshold: float = 50, description: str = "") -> PointGrid:
    return PointGrid.model_validate(
        {"name": "test", "description": description, "mql_threshold": threshold, "rules": list(rules)}
    )


@functools.cache
def shipped_default_grid() -> PointGrid:
    return load_grid(DEFAULT_GRID)


@pytest.fixture
def default_grid() -> PointGrid:
    return shipped_default_grid()


# --- the shipped default grid -----------------------------------------------------------------


def test_default_grid_rules_are_the_guide_grid(default_grid: PointGrid) -> None:
    conditions = {
        (rule.feature, rule.points, tuple(rule.in_) if rule.in_ else None, rule.min, rule.max)
        for rule in default_grid.rules
    }
    assert conditions == {
        ("seniority", 20, ("director", "vp", "c_level"), None, None),
        ("company_size", 15, ("50-199", "200-499", "500-999"), None, None),
        ("industry", 10, ("software", "financial_services", "healthcare"), None, None),
        ("n_pricing_page_view_90d", 25, None, 1, None),
        ("n_whitepaper_download_total", 15, None, 1, None),
        ("n_email_open_30d", 10, None, 3, None),
        ("n_demo_request_total", 40, None, 1, None),
        ("email_domain_kind", -50, ("invalid",), None, None),
        ("n_unsubscribe_total", -30, None, 1, None),
    }
    assert default_grid.mql_threshold == 50
    assert default_grid.name == "default"


@pytest.mark.parametrize(
    ("changes", "points"),
    [
        ({}, 0),
        ({"seniority": "vp", "company_size": "200-499", "industry": "software"}, 45),
        ({"seniority": "manager", "company_size": "1000+", "industry": "retail"}, 0),
        ({"n_pricing_page_view_90d": 1, "n_demo_request_total": 2}, 65),
        ({"n_whitepaper_download_total": 4}, 15),
        ({"n_email_open_30d": 2}, 0),
        ({"n_email_open_30d": 3}, 10),
        ({"email_domain_kind": "invalid", "n_unsubscribe_total": 1}, -80),
        ({"email_domain_kind": None, "n_unsubscribe_total": float("nan")}, 0),
        (
            {"seniority": "c_level", "company_size": "50-199", "industry": "healthcare",
             "n_pricing_page_view_90d": 3, "n_whitepaper_download_total": 1, "n_email_open_30d": 9,
             "n_demo_request_total": 1},
            135,
        ),
    ],
)
def test_default_grid_scores_hand_computed_leads(
    default_grid: PointGrid, changes: dict[str, object], points: float
) -> None:
    row = lead(**changes)
    assert default_grid.score_row(row)[0] == points
    assert default_grid.score_frame(pd.DataFrame([row]))[0] == points


def test_default_grid_mql_at_threshold(default_grid: PointGrid) -> None:
    just_below = lead(n_demo_request_total=1)  # 40
    at_threshold = lead(n_demo_request_total=1, n_email_open_30d=5)  # 50
    points = default_grid.score_frame(pd.DataFrame([just_below, at_threshold]))
    assert points.tolist() == [40, 50]
    assert default_grid.is_mql(points).tolist() == [False, True]


# --- validation -------------------------------------------------------------------------------

VALID_RULE = {"label": "Pricing page", "points": 25, "feature": "n_pricing_page_view_90d", "min": 1}


@pytest.mark.parametrize(
    ("bad_rule", "problem"),
    [
        ({"label": "Senior", "points": 20, "feature": "seniority", "in": ["vp"], "min": 1},
         "both 'in' and 'min' given"),
        ({"label": "Senior", "points": 20, "feature": "seniority", "in": ["vp"], "max": 3},
         "both 'in' and 'max' given"),
        ({"label": "Senior", "points": 20, "feature": "seniority"}, "no condition given"),
        ({"label": "Senior", "points": 20, "feature": "lead_age_days", "min": 30, "max": 30},
         "'min' (30.0) must be below 'max' (30.0)"),
        ({"label": "Senior", "points": 20, "feature": "lead_age_days", "min": 40, "max": 30},
         "'min' (40.0) must be below 'max' (30.0)"),
        ({"label": "Senior", "points": 20, "feature": "seniority", "in": []}, "'in' is an empty list"),
        ({"label": "Senior", "pionts": 20, "feature": "seniority", "in": ["vp"]}, "unknown key 'pionts'"),
        ({"label": "Senior", "feature": "seniority", "in": ["vp"]}, "'points' is missing"),
        ({"label": "Senior", "points": 20, "feature": "marketing_consent", "in": [True]},
         "holds the boolean(s) True"),
        ({"label": "Senior", "points": "many", "feature": "seniority", "in": ["vp"]}, "'points'"),
        ({"label": "Senior", "points": float("nan"), "feature": "seniority", "in": ["vp"]}, "'points'"),
    ],
)
def test_invalid_rule_is_named_by_index_and_label(bad_rule: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        make_grid(VALID_RULE, bad_rule)
    message = str(caught.value)
    assert "rule 1 ('Senior')" in message
    assert problem in message
    assert "rule 0" not in message


def test_every_invalid_rule_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        make_grid(
            {"label": "A", "points": 1, "feature": "x"},
            VALID_RULE,
            {"label": "C", "points": 1, "feature": "x", "in": ["a"], "min": 0},
        )
    message = str(caught.value)
    assert "rule 0 ('A'): no condition given" in message
    assert "rule 2 ('C'): both 'in' and 'min' given" in message


def test_duplicate_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"rule 1 \('Pricing page'\): label already used by rule 0"):
        make_grid(VALID_RULE, {**VALID_RULE, "points": 5})


@pytest.mark.parametrize(
    ("grid", "problem"),
    [
        ({"name": "g", "mql_threshold": 50, "rules": [VALID_RULE], "owner": "me"}, "owner"),
        ({"name": "g", "rules": [VALID_RULE]}, "mql_threshold"),
        ({"name": "g", "mql_threshold": 50, "rules": []}, "rules"),
        ({"name": "g", "mql_threshold": 50, "rules": [VALID_RULE, "free text"]}, "rule 1: expected a mapping"),
    ],
)
def test_invalid_grid_names_the_key(grid: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PointGrid.model_validate(grid)


def test_rule_can_be_built_in_python_with_in_keyword() -> None:
    rule = GridRule(label="Senior", points=20, feature="seniority", in_=["vp"])
    assert rule == GridRule.model_validate({"label": "Senior", "points": 20, "feature": "seniority", "in": ["vp"]})
    assert rule.matches("vp") and not rule.matches("intern")


# --- YAML ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: g\nmql_threshold: 50\nrules: [\n", "not valid YAML"),
        ("- just\n- a list\n", "a point grid is a mapping"),
        (
            "name: g\nmql_threshold: 50\nrules:\n  - label: Consent\n    points: 5\n"
            "    feature: marketing_consent\n    in: [yes]\n",
            "rule 0 ('Consent'): 'in': holds the boolean(s) True",
        ),
    ],
)
def test_load_grid_errors_name_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "sales-grid.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        load_grid(path)
    assert str(caught.value).startswith(str(path))
    assert problem in str(caught.value)


ODD_GRID = make_grid(
    {"label": "Consent", "points": 2.5, "feature": "marketing_consent", "in": ["yes"]},
    {"label": "Mid-size", "points": 7, "feature": "employee_count", "in": [50, 120.5]},
    {"label": "Fresh lead", "points": -3.25, "feature": "lead_age_days", "max": 14},
    {"label": "Engaged", "points": 1e-3, "feature": "engagement_decayed", "min": -1.5, "max": 2},
    {"label": "Band", "points": 4, "feature": "company_size", "in": ["1000+", "1-9", "null", "no"]},
    threshold=12.75,
    description="Line one: with colon\nline two # not a comment\n",
)


@pytest.mark.parametrize("grid", [pytest.param("default", id="default"), pytest.param(ODD_GRID, id="odd")])
def test_yaml_round_trip(grid: PointGrid | str, tmp_path: Path, default_grid: PointGrid) -> None:
    grid = default_grid if grid == "default" else grid
    assert PointGrid.from_yaml(grid.to_yaml()) == grid
    save_grid(grid, tmp_path / "grid.yaml")
    reloaded = load_grid(tmp_path / "grid.yaml")
    assert reloaded == grid
    assert reloaded.model_dump(by_alias=True) == grid.model_dump(by_alias=True)


def test_to_yaml_reads_like_a_handwritten_grid(default_grid: PointGrid) -> None:
    text = default_grid.to_yaml()
    assert "in: [director, vp, c_level]" in text
    assert "points: 20\n" in text
    assert yaml.safe_load(ODD_GRID.to_yaml())["rules"][0]["in"] == ["yes"]


# --- scoring semantics --------------------------------------------------------------------------

BOUNDED = make_grid({"label": "Some", "points": 5, "feature": "n", "min": 1, "max": 3})


@pytest.mark.parametrize(
    ("value", "fires"),
    [(0.999, False), (1, True), (1.0, True), (2.5, True), (3, False), (7, False), (-1, False),
     (None, False), (float("nan"), False), (np.float32(2.0), True), (np.int64(1), True), (pd.NA, False)],
)
def test_bounds_are_min_inclusive_max_exclusive(value: object, fires: bool) -> None:
    expected = 5.0 if fires else 0.0
    assert BOUNDED.score_row({"n": value})[0] == expected
    assert BOUNDED.score_frame(pd.DataFrame({"n": pd.Series([value], dtype=object)}))[0] == expected


@pytest.mark.parametrize(
    ("feature", "values", "value", "fires"),
    [
        ("seniority", ["vp", "c_level"], "vp", True),
        ("seniority", ["vp", "c_level"], "VP", False),
        ("seniority", ["vp", "c_level"], " vp", False),
        ("seniority", ["vp", "c_level"], None, False),
        ("seniority", ["vp", "c_level"], float("nan"), False),
        ("employee_count", [10, 50.0], 10, True),
        ("employee_count", [10, 50.0], 10.0, True),
        ("employee_count", [10, 50.0], np.int64(50), True),
        ("employee_count", [10, 50.0], "10", False),
        ("employee_count", [10, 50.0], 11, False),
    ],
)
def test_in_is_exact_membership(feature: str, values: list[object], value: object, fires: bool) -> None:
    grid = make_grid({"label": "Listed", "points": 3, "feature": feature, "in": values})
    expected = 3.0 if fires else 0.0
    assert grid.score_row({feature: value})[0] == expected
    assert grid.score_frame(pd.DataFrame({feature: pd.Series([value], dtype=object)}))[0] == expected


@pytest.mark.parametrize("dtype", ["object", "str", "category"])
def test_categorical_column_dtypes_score_alike(dtype: str) -> None:
    grid = make_grid({"label": "Senior", "points": 20, "feature": "seniority", "in": ["vp", "c_level"]})
    column = pd.Series(["vp", None, "intern", np.nan, "c_level", "VP"], dtype=dtype)
    assert grid.score_frame(pd.DataFrame({"seniority": column})).tolist() == [20, 0, 0, 0, 20, 0]


def test_score_row_names_fired_rules_in_rule_order(default_grid: PointGrid) -> None:
    total, fired = default_grid.score_row(lead(n_unsubscribe_total=2, seniority="director", n_email_open_30d=4))
    assert total == 0
    assert fired == [
        {"label": "Target persona (director, VP or C-level)", "points": 20.0},
        {"label": "Opened 3 or more emails (last 30 days)", "points": 10.0},
        {"label": "Unsubscribed from emails", "points": -30.0},
    ]


def test_missing_features_are_listed(default_grid: PointGrid) -> None:
    row = lead()
    del row["industry"], row["n_unsubscribe_total"]
    for call in (lambda: default_grid.score_row(row), lambda: default_grid.score_frame(pd.DataFrame([row]))):
        with pytest.raises(MissingFeaturesError) as caught:
            call()
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, KeyError)
        assert caught.value.missing == ("industry", "n_unsubscribe_total")
        assert "industry, n_unsubscribe_total" in str(caught.value)
        assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


def test_text_in_a_numeric_rule_names_rule_and_feature() -> None:
    with pytest.raises(ValueError, match=r"rule 'Some': feature 'n' needs a number.*'2'"):
        BOUNDED.score_row({"n": "2"})
    with pytest.raises(ValueError, match=r"rule 'Some': feature 'n' needs numbers.*'2'"):
        BOUNDED.score_frame(pd.DataFrame({"n": ["2", None]}))


def test_required_features_once_in_order() -> None:
    grid = make_grid(
        {"label": "A", "points": 1, "feature": "b", "min": 1},
        {"label": "B", "points": 1, "feature": "a", "in": ["x"]},
        {"label": "C", "points": 1, "feature": "b", "min": 5},
    )
    assert grid.required_features() == ["b", "a"]


@pytest.mark.parametrize(("points", "mql"), [(49.99, False), (50, True), (120, True), (float("nan"), False)])
def test_is_mql(default_grid: PointGrid, points: float, mql: bool) -> None:
    assert default_grid.is_mql(points) is mql
    assert default_grid.is_mql(np.array([points])).tolist() == [mql]


# --- parity of the two scorers ------------------------------------------------------------------

PARITY_GRID = make_grid(
    {"label": "Senior", "points": 20, "feature": "seniority", "in": ["director", "vp", "c_level"]},
    {"label": "Size", "points": 15, "feature": "company_size", "in": ["50-199", "200-499"]},
    {"label": "Headcount", "points": 3, "feature": "employee_count", "in": [10, 50.0, 120.5]},
    {"label": "Pricing", "points": 25, "feature": "n_pricing_page_view_90d", "min": 1},
    {"label": "Recent click", "points": 7.5, "feature": "days_since_email_click", "max": 7},
    {"label": "Engaged", "points": 0.1, "feature": "engagement_decayed", "min": 0.5, "max": 3.25},
    {"label": "Bad email", "points": -50, "feature": "email_domain_kind", "in": ["invalid"]},
)
CATEGORY_COLUMNS = ("seniority", "company_size", "email_domain_kind")

category_value = st.one_of(
    st.sampled_from(["director", "vp", "c_level", "intern", "VP", "50-199", "200-499", "1000+", "invalid", ""]),
    st.none(),
    st.just(float("nan")),
)
number_value = st.one_of(
    st.integers(-3, 130),
    st.sampled_from([0.5, 3.25, 7.0, 10, 10.0, 50, 50.0, 120.5, -0.0]),
    st.floats(-10, 200, allow_nan=False),
    st.none(),
    st.just(float("nan")),
)
parity_row = st.fixed_dictionaries(
    {
        "seniority": category_value,
        "company_size": category_value,
        "email_domain_kind": category_value,
        "employee_count": number_value,
        "n_pricing_page_view_90d": number_value,
        "days_since_email_click": number_value,
        "engagement_decayed": number_value,
    }
)


@pytest.mark.parametrize("grid", [pytest.param("default", id="default"), pytest.param(PARITY_GRID, id="parity")])
@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(parity_row, min_size=1, max_size=12),
    as_category=st.booleans(),
    numbers_as_object=st.booleans(),
)
def test_score_row_equals_score_frame(
    grid: PointGrid | str, rows: list[dict[str, object]], as_category: bool, numbers_as_object: bool
) -> None:
    if grid == "default":
        grid = shipped_default_grid()
        rows = [
            {**lead(), "seniority": r["seniority"], "company_size": r["company_size"],
             "email_domain_kind": r["email_domain_kind"], "n_pricing_page_view_90d": r["employee_count"],
             "n_email_open_30d": r["days_since_email_click"], "n_demo_request_total": r["engagement_decayed"]}
            for r in rows
        ]
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column in CATEGORY_COLUMNS and as_category:
            frame[column] = frame[column].astype("category")
        elif column not in CATEGORY_COLUMNS and numbers_as_object:
            frame[column] = pd.Series([r[column] for r in rows], dtype=object)

    from_frame = grid.score_frame(frame)
    from_raw_rows = [grid.score_row(row) for row in rows]
    from_frame_rows = [grid.score_row(row) for row in frame.to_dict("records")]

    assert from_frame.tolist() == [total for total, _ in from_raw_rows]
    assert from_frame.tolist() == [total for total, _ in from_frame_rows]
    for total, fired in from_raw_rows:
        assert math.fsum(rule["points"] for rule in fired) == pytest.approx(total)
