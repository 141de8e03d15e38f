"""Explanations: reason labels, global drivers, the learned grid and the leadership report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from features.labels import ATTRIBUTE_TITLES, LANGUAGES, describe_bucket, describe_driver, driver_of
from features.vocabulary import count_feature, recency_feature
from leadscore.cli import app
from model.bundle import IMPORTANCE_FILE, REPORT_FILE, ScoringModel
from sources.grids import load_grid
from training.config import ProjectConfig

SPEC = ProjectConfig().features


def lead_values(**changes: object) -> dict[str, object]:
    """Feature values of a lead who did nothing, with the simulator's attributes, plus changes."""
    values: dict[str, object] = {name: 0.0 for name in SPEC.feature_names()}
    for name in SPEC.feature_names():
        if name.startswith("days_since_"):
            values[name] = math.nan
    values.update(
        industry="software",
        company_size="200-499",
        country="FR",
        job_role="marketing",
        seniority="director",
        source="referral",
        marketing_consent="yes",
        email_domain_kind="corporate",
        employee_count=250.0,
    )
    values.update(changes)
    return values


def pricing(n7: int, n30: int, n90: int, total: int, days: float) -> dict[str, object]:
    return {
        "n_pricing_page_view_7d": n7,
        "n_pricing_page_view_30d": n30,
        "n_pricing_page_view_90d": n90,
        "n_pricing_page_view_total": total,
        "days_since_pricing_page_view": days,
    }


LABELS = [
    # (driver, changes, English, French)
    ("pricing_page_view", pricing(3, 3, 3, 3, 1.5), "Visited the pricing page 3 times in the last 7 days", "A visité la page tarifs 3 fois au cours des 7 derniers jours"),
    ("pricing_page_view", pricing(1, 4, 4, 4, 0.2), "Visited the pricing page 4 times in the last 30 days", "A visité la page tarifs 4 fois au cours des 30 derniers jours"),
    ("pricing_page_view", pricing(0, 0, 1, 1, 40.9), "Visited the pricing page 40 days ago", "A visité la page tarifs il y a 40 jours"),
    ("pricing_page_view", pricing(0, 0, 1, 5, 45.0), "Visited the pricing page 5 times, most recently 45 days ago", "A visité la page tarifs 5 fois, la dernière il y a 45 jours"),
    ("pricing_page_view", {}, "Never visited the pricing page", "N'a jamais visité la page tarifs"),
    ("unsubscribe", {"n_unsubscribe_total": 1, "days_since_unsubscribe": 12.4}, "Unsubscribed 12 days ago", "S'est désabonné il y a 12 jours"),
    ("demo_request", {"n_demo_request_total": 1, "days_since_demo_request": 0.3}, "Requested a demo today", "A demandé une démo aujourd'hui"),
    ("demo_request", {"n_demo_request_total": 1, "days_since_demo_request": 1.2}, "Requested a demo yesterday", "A demandé une démo hier"),
    ("page_view", {"n_page_view_7d": 12, "n_page_view_30d": 12, "n_page_view_90d": 12, "n_page_view_total": 12, "days_since_page_view": 2.0}, "Viewed 12 pages of our website in the last 7 days", "A consulté 12 pages du site au cours des 7 derniers jours"),
    ("email_bounce", {"n_email_bounce_total": 1, "days_since_email_bounce": 3.0}, "An email to this lead bounced 3 days ago", "Un email à ce contact est revenu en erreur il y a 3 jours"),
    ("company_size", {}, "Company size 200–499 employees", "Taille de l'entreprise : 200 à 499 salariés"),
    ("company_size", {"company_size": "1000+"}, "Company size 1,000+ employees", "Taille de l'entreprise : 1 000 salariés et plus"),
    ("seniority", {}, "Director-level contact", "Niveau hiérarchique : directeur"),
    ("seniority", {"seniority": "c_level"}, "C-level executive", "Niveau hiérarchique : membre de la direction générale"),
    ("industry", {"industry": "financial_services"}, "Industry: financial services", "Secteur : services financiers"),
    ("industry", {"industry": None}, "Industry not known", "Secteur : inconnu"),
    ("industry", {"industry": "space_mining"}, "Industry: space mining", "Secteur : space mining"),
    ("country", {}, "Based in France", "Pays : France"),
    ("job_role", {"job_role": "it"}, "Works in IT", "Fonction : informatique"),
    ("source", {}, "Came from a referral", "Source d'acquisition : recommandation"),
    ("email_domain_kind", {"email_domain_kind": "invalid"}, "Invalid email address", "Adresse email : invalide"),
    ("marketing_consent", {"marketing_consent": "no"}, "Did not agree to marketing emails", "Consentement marketing : non"),
    ("employee_count", {"employee_count": 1200.0}, "Company has 1,200 employees", "Effectif : 1 200 salariés"),
    ("activity_days", {"active_days_30d": 1}, "Active on 1 day in the last 30 days", "Actif 1 jour sur les 30 derniers jours"),
    ("activity_days", {"active_days_30d": 0}, "No activity in the last 30 days", "Aucune activité ces 30 derniers jours"),
    ("engagement", {"engagement_decayed": 12.34}, "Recent engagement score: 12.3", "Score d'engagement récent : 12,3"),
    ("volume", {"n_events_total": 17}, "17 interactions since the lead was created", "17 interactions depuis la création du lead"),
    ("lead_age", {"lead_age_days": 30.7}, "Lead created 30 days ago", "Lead créé il y a 30 jours"),
]


@pytest.mark.parametrize(("driver", "changes", "english", "french"), LABELS, ids=[f"{c[0]}-{i}" for i, c in enumerate(LABELS)])
@pytest.mark.parametrize("language", LANGUAGES)
def test_reason_labels_read_like_a_salesperson(driver: str, changes: dict, english: str, french: str, language: str) -> None:
    label = describe_driver(driver, lead_values(**changes), SPEC, language).label
    assert label == {"en": english, "fr": french}[language]


@pytest.mark.parametrize("driver", sorted(ATTRIBUTE_TITLES))
@pytest.mark.parametrize("value", ["first_level", None])
def test_french_attribute_labels_start_with_the_title_and_differ_from_english(driver: str, value: object) -> None:
    values = lead_values(**{driver: value if driver != "employee_count" else (None if value is None else 42.0)})
    french = describe_driver(driver, values, SPEC, "fr").label
    english = describe_driver(driver, values, SPEC, "en").label
    assert french.startswith(ATTRIBUTE_TITLES[driver]["fr"] + " : ")
    assert french != english


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_driver_of_the_spec_has_a_label_without_raw_feature_names(language: str) -> None:
    values = lead_values(**pricing(1, 2, 2, 2, 3.0))
    for driver in dict.fromkeys(driver_of(f, SPEC) for f in SPEC.feature_names()):
        label = describe_driver(driver, values, SPEC, language).label
        assert label and "_" not in label, (driver, label)


def test_unknown_language_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"\['en', 'fr'\].*'de'"):
        describe_driver("seniority", lead_values(), SPEC, "de")


@pytest.mark.parametrize(
    ("feature", "low", "high", "english", "french"),
    [
        ("n_pricing_page_view_30d", 1, 3, "Pricing page visits in the last 30 days: 1–2", "Visites de la page tarifs (30 derniers jours) : 1 à 2"),
        ("n_pricing_page_view_30d", 3, None, "Pricing page visits in the last 30 days: 3 or more", "Visites de la page tarifs (30 derniers jours) : 3 ou plus"),
        ("n_demo_request_total", 1, 2, "Demo requests since the lead was created: 1", "Demandes de démo depuis la création : 1"),
        ("days_since_demo_request", 0, 7, "Demo requests: last one 0–6 days ago", "Demandes de démo : la dernière il y a 0 à 6 jours"),
        ("days_since_demo_request", None, None, "Demo requests: never", "Demandes de démo : jamais"),
        ("engagement_decayed", 2.5, 8.0, "Recent engagement score: 2.5 to under 8", "Score d'engagement récent : de 2,5 à moins de 8"),
        ("employee_count", None, 10.0, "Employees: below 10", "Effectif : moins de 10"),
    ],
)
@pytest.mark.parametrize("language", LANGUAGES)
def test_bucket_labels(feature: str, low: float | None, high: float | None, english: str, french: str, language: str) -> None:
    assert describe_bucket(feature, low, high, SPEC, language) == {"en": english, "fr": french}[language]


@pytest.mark.parametrize(
    ("low", "high", "english"),
    [
        (0, 7, "Demo requests: last one 0–6 days ago"),
        (30, None, "Demo requests: last one 30 or more days ago, or never"),
        (30, 20_000, "Demo requests: last one 30–19,999 days ago"),
        (36_500, None, "Demo requests: never"),
    ],
)
def test_a_recency_that_reads_never_as_a_number_says_never(low: float, high: float | None, english: str) -> None:
    # With features.never_seen_days, "never" is the far end of the recency's range, not a missing value.
    spec = SPEC.model_copy(update={"never_seen_days": 36_500.0})
    assert describe_bucket("days_since_demo_request", low, high, spec, "en") == english


def test_reason_points_are_probability_points(training_result) -> None:
    """A reason's contribution is 100 * (p - p without the driver's log-odds), as documented."""
    model, rows, matrix = training_result.model, training_result.test.rows, training_result.test.matrix
    contrib = model.contributions(matrix[:50])
    for i in range(50):
        up, down = model.reasons(contrib[i], rows.row(i), top_k=2)
        raw = float(contrib[i].sum())
        for reason in up + down:
            without = model.meta.calibration.apply(np.array([raw - reason.log_odds]))[0]
            expected = 100 * (model.meta.calibration.apply(np.array([raw]))[0] - without)
            assert reason.contribution == pytest.approx(expected)
            assert 0 <= abs(reason.contribution) <= 100


# -- global drivers ----------------------------------------------------------------------------


def test_drivers_are_json_ranked_and_cover_every_lead(explanations, training_result) -> None:
    drivers = json.loads(json.dumps(explanations.drivers))
    assert drivers["model_version"] == training_result.model.meta.model_version
    assert drivers["n_rows"] == len(training_result.test.y)
    weights = [d["mean_abs_log_odds"] for d in drivers["drivers"]]
    assert weights == sorted(weights, reverse=True)
    assert {d["driver"] for d in drivers["drivers"]} == {driver_of(f, SPEC) for f in SPEC.feature_names()}
    for d in drivers["drivers"]:
        assert sum(g["rows"] for g in d["groups"]) == drivers["n_rows"], d["driver"]
        for g in d["groups"]:
            assert g["direction"] == ("up" if g["mean_log_odds"] > 0 else "down" if g["mean_log_odds"] < 0 else "none")
            assert set(g["label"]) == set(LANGUAGES)
    overall = drivers["conversion_rate"]
    assert overall == pytest.approx(training_result.test.y.mean(), abs=1e-4)


def test_drivers_say_what_the_simulator_built_in(explanations) -> None:
    by_name = {d["driver"]: d for d in explanations.drivers["drivers"]}
    seniority = {g["condition"]["in"][0]: g for g in by_name["seniority"]["groups"] if "in" in g["condition"]}
    assert seniority["intern"]["direction"] == "down"
    assert seniority["director"]["direction"] == "up"
    assert seniority["director"]["conversion_rate"] > seniority["intern"]["conversion_rate"]
    email = {g["condition"]["in"][0]: g for g in by_name["email_domain_kind"]["groups"] if "in" in g["condition"]}
    assert email["corporate"]["mean_log_odds"] > email["disposable"]["mean_log_odds"]


# -- the learned grid --------------------------------------------------------------------------


def test_learned_grid_ranks_between_the_handwritten_grid_and_the_model(explanations) -> None:
    auc = explanations.roc_auc
    assert auc["point_grid"] + 0.03 < auc["learned_grid"] <= auc["model"] + 0.005, auc


def test_learned_grid_is_a_grid_file_the_grid_scorer_runs(explanations, training_result, tmp_path: Path) -> None:
    from sources.grids import save_grid

    grid = explanations.learned.grid
    save_grid(grid, tmp_path / "learned.yaml")
    loaded = load_grid(tmp_path / "learned.yaml")
    assert loaded == grid
    frame = training_result.test.rows.to_frame(SPEC)
    np.testing.assert_array_equal(loaded.score_frame(frame), explanations.scores["learned_grid"])
    row = training_result.test.rows.row(0)
    assert loaded.score_row(row)[0] == pytest.approx(explanations.scores["learned_grid"][0])
    assert "10 points = +1 log-odds" in grid.description


def test_learned_points_map_to_the_model_s_probability(explanations, training_result) -> None:
    learned, model = explanations.learned, training_result.model
    points = explanations.scores["learned_grid"]
    p_grid = learned.probability(model, points)
    p_model = explanations.scores["model"]
    # The grid is the model made additive and coarse: its probabilities follow the model's.
    assert np.corrcoef(p_grid, p_model)[0, 1] > 0.8
    assert abs(p_grid.mean() - p_model.mean()) < 0.3 * p_model.mean()
    # More points, more chance: the mapping is increasing.
    assert np.all(np.diff(learned.probability(model, np.arange(-20, 100, 10.0))) >= 0)


def test_learned_mql_threshold_matches_the_model_s_mql_volume(explanations) -> None:
    learned = explanations.learned
    assert abs(learned.grid_mql_share - learned.model_mql_share) < 0.05


def test_every_handwritten_rule_is_compared(explanations, training_result) -> None:
    grid = training_result.model.meta.grid
    comparison = explanations.comparison
    assert [c["label"] for c in comparison] == [r.label for r in grid.rules]
    by_feature = {c["feature"]: c for c in comparison}
    assert by_feature["email_domain_kind"]["data_points"] < 0  # invalid email
    assert by_feature["n_unsubscribe_total"]["data_points"] <= 0  # never credited
    assert by_feature["seniority"]["data_points"] > 0  # director, VP, C-level
    for c in comparison:
        assert c["explanation"]
        if c["data_points"] is not None:
            assert f"{c['data_points']:+d} point" in c["explanation"]


# -- the report ----------------------------------------------------------------------------


def test_report_is_one_offline_page_with_every_part(explanations, training_result) -> None:
    page = explanations.html
    assert page.startswith("<!DOCTYPE html>")
    # Readable offline: no script, no external stylesheet, image or font.
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page
    assert not re.search(r"url\((?!#)", page)  # only references inside the page (SVG clip paths)
    assert page.count("<svg") == 6  # gains, lift, calibration, tiers, fit x engagement cells, drivers
    meta = training_result.model.meta
    for text in (meta.model_version, meta.trained_at, "more conversions out of every", "Gains", "Lift",
                 "Calibration", "Conversion rate per tier", "What drives the score", "Your grid against what the data says",
                 "Fit and engagement", "<h2>Trend</h2>"):
        assert text in page, text
    for rule in meta.grid.rules:
        assert rule.label in page


def test_bundle_files_are_written_and_optional_for_loading(explanations, training_result, tmp_path: Path) -> None:
    from training.report import LEARNED_GRID_FILE, write_bundle_files

    bundle = training_result.model.save(tmp_path / "bundle")
    written = write_bundle_files(explanations, bundle)
    assert sorted(p.name for p in written) == sorted([REPORT_FILE, IMPORTANCE_FILE, LEARNED_GRID_FILE])
    assert json.loads((bundle / IMPORTANCE_FILE).read_text()) == json.loads(json.dumps(explanations.drivers))
    with_files = ScoringModel.load(bundle)
    for name in (REPORT_FILE, IMPORTANCE_FILE, LEARNED_GRID_FILE):
        (bundle / name).unlink()
    without_files = ScoringModel.load(bundle)
    matrix = training_result.test.matrix[:20]
    np.testing.assert_allclose(with_files.probability(matrix), without_files.probability(matrix))


def test_cli_report_writes_the_page(trained_bundle: Path, simulated_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(app, ["report", "--bundle", str(trained_bundle), "--data", str(simulated_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "learned grid" in result.output
    page = out.read_text()
    assert page.count("<svg") == 6
    assert ScoringModel.load(trained_bundle).meta.model_version in page


def test_cli_report_names_a_missing_bundle(tmp_path: Path, simulated_dir: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--bundle", str(tmp_path / "nope"), "--data", str(simulated_dir), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert "bundle.json is missing" in result.output


def test_mlflow_run_carries_the_report_in_the_bundle(training_result, simulated_dataset, explanations, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from model.registry import RegistryConfig
    from training.tracking import log_training_run

    registry = RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "artifacts"))
    record = log_training_run(training_result, simulated_dataset, ProjectConfig(registry=registry), explanations=explanations)
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    assert REPORT_FILE in {a.path for a in client.list_artifacts(record.run_id)}
    bundle_files = {Path(a.path).name for a in client.list_artifacts(record.run_id, "bundle")}
    assert {REPORT_FILE, IMPORTANCE_FILE, "bundle.json", "model.txt"} <= bundle_files
    run = client.get_run(record.run_id)
    assert run.data.metrics["learned_grid.roc_auc"] == pytest.approx(explanations.roc_auc["learned_grid"])
    assert roc_auc_score(training_result.test.y, explanations.scores["learned_grid"]) == pytest.approx(
        explanations.roc_auc["learned_grid"]
    )


# -- reasons say what the model saw ----------------------------------------------------------

_NUMBER = re.compile(r"\d[\d,  ]*(?:[.,]\d+)?")


def _numbers_in(label: str) -> list[float]:
    # "1,200" / "1 200" (thousands) and "12.3" / "12,3" (decimals) as numbers.
    out = []
    for text in _NUMBER.findall(label):
        text = text.strip().replace(" ", "").replace(" ", "")
        if re.fullmatch(r"\d{1,3}(,\d{3})+", text):
            text = text.replace(",", "")
        out.append(float(text.replace(",", ".")))
    return out


@st.composite
def _lead_feature_values(draw: st.DrawFn) -> dict[str, object]:
    """Feature values of one lead as the engine builds them: window counts nested, recency when seen."""
    values = lead_values()
    for event_type in SPEC.interaction_types:
        counts = sorted(draw(st.lists(st.integers(0, 40), min_size=len(SPEC.windows_days) + 1, max_size=len(SPEC.windows_days) + 1)))
        for window, n in zip(SPEC.windows_days, counts, strict=False):
            values[count_feature(event_type, window)] = float(n)
        values[count_feature(event_type, None)] = float(counts[-1])
        values[recency_feature(event_type)] = draw(st.floats(0, 400)) if counts[-1] else math.nan
    values["engagement_decayed"] = draw(st.floats(0, 80, allow_nan=False))
    values["active_days_30d"] = float(draw(st.integers(0, 30)))
    values["n_events_total"] = float(draw(st.integers(0, 500)))
    values["lead_age_days"] = draw(st.floats(0, 900))
    values["employee_count"] = float(draw(st.integers(1, 100_000)))
    return values


@settings(max_examples=150, deadline=None)
@given(values=_lead_feature_values(), language=st.sampled_from(LANGUAGES))
def test_a_reason_quotes_the_value_of_the_feature_it_names(values: dict[str, object], language: str) -> None:
    for driver in dict.fromkeys(driver_of(f, SPEC) for f in SPEC.feature_names()):
        phrase = describe_driver(driver, values, SPEC, language)
        named = values[phrase.feature]
        if isinstance(phrase.value, str) or phrase.value is None:
            assert phrase.value == named or (phrase.value is None and named is None), (driver, phrase)
            continue
        expected = round(float(named), 1) if phrase.feature == "engagement_decayed" else math.floor(float(named))
        assert phrase.value == expected, (driver, phrase, named)
        # Counts are written out from 2 on ("never", "once ... ago" say 0 and 1 in words).
        if (driver in {"volume", "activity_days"} and phrase.value != 0) or (
            driver in SPEC.interaction_types and phrase.value >= 2
        ):
            assert phrase.value in _numbers_in(phrase.label), (driver, phrase)


def test_engagement_of_unweighted_types_is_not_called_no_activity() -> None:
    # Interactions of types the engagement score gives no weight leave it at 0: the label must
    # not claim the lead did nothing when it was active in the last 30 days.
    phrase = describe_driver("engagement", lead_values(engagement_decayed=0.0, active_days_30d=5), SPEC, "en")
    assert phrase.label == "Recent engagement score: 0.0"
    quiet = describe_driver("engagement", lead_values(engagement_decayed=0.0, active_days_30d=0), SPEC, "en")
    assert quiet.label == "No activity in recent weeks"


def test_scored_reasons_name_the_feature_whose_value_they_quote(trained_bundle: Path, simulated_dataset) -> None:
    import pandas as pd

    from features.engine import snapshot_features

    model = ScoringModel.load(trained_bundle)
    leads = simulated_dataset.leads.head(80)
    snapshots = pd.DataFrame({"lead_id": leads["lead_id"], "as_of": leads["created_at"] + pd.Timedelta(days=30)})
    rows = snapshot_features(leads, simulated_dataset.interactions, snapshots, model.spec)
    contributions = model.contributions(model.encode(rows))
    checked = 0
    for i in range(len(snapshots)):
        values = rows.row(i)
        up, down = model.reasons(contributions[i], values, top_k=5, language="en")
        for reason in up + down:
            named = values[reason.feature]
            if isinstance(reason.value, str) or reason.value is None:
                assert reason.value == named, reason
                continue
            expected = round(float(named), 1) if reason.feature == "engagement_decayed" else math.floor(float(named))
            assert reason.value == expected, reason
            checked += 1
    assert checked > 50


def test_the_report_says_what_changed_over_time_and_what_was_done(training_result, explanations) -> None:
    import dataclasses

    from training.drift import drift_report
    from training.report import explain, inputs_from_training
    from training.selection_config import Candidate

    assert "What changed over time" not in explanations.html  # a bundle without the drift guard's findings
    drift = drift_report(training_result.train.rows, training_result.test.rows, training_result.model.spec)
    actions = drift.actions(Candidate(family="linear_slopes", half_life=0.25), "2025-03-26", ["campaign_month"])
    assert [row["feature"] for row in actions[:5]] == [name for name, _ in drift.shifted[:5]]
    meta = training_result.model.meta
    model = ScoringModel(training_result.model.booster, meta.model_copy(
        update={"training": {**meta.training, "drift": {**drift.to_dict(), "actions": actions}}}))  # fmt: skip
    page = explain(dataclasses.replace(inputs_from_training(training_result), model=model)).html
    assert "What changed over time" in page
    for row in actions:
        assert f"<td>{row['feature']}</td>" in page and row["done"] in page
    assert "recent leads weigh more (half-life 25% of the rows)" in page
    assert "campaign_month</td><td class='num'></td><td class='num'></td><td>left out before training by the leakage guard" in page
