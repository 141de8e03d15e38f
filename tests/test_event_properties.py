"""Event properties (numbers an event carries, aggregated per window) and types split by a channel.

Issue 13, item 4: config parsing and its errors, the loader's number rules, batch == one-lead
parity, no future leakage, split_by, labels quoting the named feature's value, and a training
run through a `data:` config in which a property carries the signal.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from features.engine import counted_as, lead_features, snapshot_features, to_epoch_seconds
from features.labels import LANGUAGES, describe_bucket, describe_driver, driver_of
from features.spec import FeatureSpec
from features.vocabulary import frequent_types, property_feature
from leadscore.cli import app
from model.bundle import IMPORTANCE_FILE, ScoringModel
from model.scoring import InteractionIn, LeadIn, LeadRejected, score_lead, score_table
from sources.loader import load_project_data
from training.config import ConfigError, load_config

runner = CliRunner()
T0 = pd.Timestamp("2024-01-01T00:00:00Z")
TYPES = ["web_session", "email_click", "email_click__newsletter"]
SPEC = FeatureSpec(
    email_column=None,
    interaction_types=TYPES,
    windows_days=[7, 30],
    properties={"pages": ["sum", "max"], "amount": ["max"]},
    property_labels={
        "pages": {"en": {"title": "Pages viewed", "sum": "{x} pages viewed"}, "fr": {"title": "Pages vues", "sum": "{x} pages vues"}}
    },
)


# -- 1. config ------------------------------------------------------------------------------


def _config(tmp_path: Path, interactions: list[dict], features: dict | None = None) -> Path:
    if not (tmp_path / "leads.csv").exists():
        pd.DataFrame({"id": ["a"], "created": ["2024-01-01"], "won": [""]}).to_csv(tmp_path / "leads.csv", index=False)
    raw: dict = {
        "data": {
            "exported_at": "2024-06-01T00:00:00Z",
            "leads": {"source": "leads.csv", "id": "id", "created_at": "created", "outcome": {"column": "won", "kind": "date"}},
            "interactions": interactions,
        }
    }
    if features is not None:
        raw["features"] = features
    path = tmp_path / "leadscore.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _sessions(**table: object) -> dict:
    return {"source": "sessions.csv", "lead_id": "contact", "occurred_at": "started", "type_constant": "web_session", **table}


def test_properties_parse_with_shorthand_and_become_spec_features(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, [
        _sessions(properties={"pages": "pages_per_session", "session_duration_s": {"column": "duration", "aggregate": ["max"]}}),
        {"source": "deals.csv", "lead_id": "contact", "occurred_at": "closed", "type_constant": "deal",
         "properties": {"amount": {"column": "Amount", "aggregate": ["max", "sum"]}}},
    ]))  # fmt: skip
    assert cfg.features.properties == {"amount": ["sum", "max"], "pages": ["sum", "max"], "session_duration_s": ["max"]}
    names = cfg.features.property_features()
    assert {"sum_pages_7d", "max_pages_total", "max_session_duration_s_30d", "sum_amount_90d"} <= set(names)
    assert "sum_session_duration_s_7d" not in names
    assert names == [n for n in cfg.features.feature_names() if n in set(names)]  # in the model matrix
    schema = cfg.data.lead_schema()  # type: ignore[union-attr]
    assert {(c.name, c.source) for c in schema.event_properties} == {
        ("pages", "pages_per_session"), ("session_duration_s", "duration"), ("amount", "Amount")
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_sessions(properties={"pages": {"column": "p", "aggregate": ["mean"]}}), r"data\.interactions\.0\.properties\.pages\.aggregate"),
        (_sessions(properties={"pages": {"column": "p", "aggregate": []}}), r"data\.interactions\.0\.properties\.pages\.aggregate"),
        (_sessions(properties={"Pages Viewed": "p"}), r"properties\.Pages Viewed: a property name is snake_case.*'pages_viewed'"),
        (_sessions(properties={"type": "p"}), r"properties\.type: a property name is snake_case and not one of"),
        (_sessions(properties={"pages": "contact"}), r"properties\.pages\.column: 'contact' is this table's lead_id column"),
        (_sessions(properties={"pages": "p", "views": "p"}), r"properties: column\(s\) \['p'\] used by two properties"),
        (_sessions(split_by="channel", channel="medium"), r"data\.interactions\.0.*split_by: 'channel' and channel: 'medium'"),
        (_sessions(properties={"pages": {"column": "p", "extra": 1}}), r"data\.interactions\.0\.properties\.pages\.extra"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, [table]))


def test_one_property_aggregates_one_way_across_tables(tmp_path: Path) -> None:
    tables = [_sessions(properties={"pages": {"column": "p", "aggregate": ["sum"]}}),
              _sessions(type_constant="app_session", properties={"pages": {"column": "p", "aggregate": ["max"]}})]  # fmt: skip
    with pytest.raises(ConfigError, match=r"interactions\.1\.properties\.pages\.aggregate: \['max'\], but interactions\.0\.properties\.pages gives \['sum'\]"):
        load_config(_config(tmp_path, tables))


def test_features_properties_are_declared_by_the_data_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"features\.properties: leave it out when data: is given; data\.interactions\[\]\.properties"):
        load_config(_config(tmp_path, [_sessions(properties={"pages": "p"})], features={"properties": {"views": ["sum"]}}))


def test_a_property_sharing_a_driver_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"properties \['web_session'\] share a name"):
        FeatureSpec(interaction_types=["web_session"], properties={"web_session": ["sum"]})


# -- 2. the loader: number rules, unreadable values counted ---------------------------------


def _write_export(folder: Path) -> Path:
    pd.DataFrame({"id": ["a", "b"], "created": ["2024-01-01", "2024-01-02"], "won": ["", "2024-02-01"]}).to_csv(
        folder / "leads.csv", index=False
    )
    sessions = pd.DataFrame(
        {
            "contact": ["a", "a", "a", "b", "b"],
            "started": ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-06"],
            "pages_per_session": ["1 204,5", "3", "lots", "n/a", ""],
            "channel": ["Newsletter", "Newsletter", "Sales", "Partner", None],
        }
    )
    sessions.to_csv(folder / "sessions.csv", index=False, sep=";")
    return _config(folder, [_sessions(
        source={"path": "sessions.csv", "csv": {"separator": ";", "decimal": ",", "thousands": " "}},
        properties={"pages": "pages_per_session"}, split_by="channel",
    )])  # fmt: skip


def test_properties_are_read_by_the_schema_number_rules_and_bad_values_counted(tmp_path: Path) -> None:
    path = _write_export(tmp_path)
    cfg = load_config(path)
    cfg.data.columns.missing_values = ["n/a"]  # type: ignore[union-attr]
    project = load_project_data(cfg.data, cfg.features)  # type: ignore[arg-type]
    events = project.dataset.interactions
    assert events["pages"].tolist()[:3] == [1204.5, 3.0, pytest.approx(math.nan, nan_ok=True)]
    assert events["pages"].isna().tolist() == [False, False, True, True, True]
    breaches = [b for b in project.dataset.report.breaches if "pages_per_session" in b.rule]
    # Only "lots" is unreadable; "n/a" is a missing token and "" is empty: missing, not counted.
    assert [(b.table, b.count, b.examples, b.action) for b in breaches] == [
        ("data.interactions.0", 1, ["a"], "kept, value set to missing")
    ]
    assert "properties.pages" in breaches[0].rule
    schema = project.dataset.schema
    assert schema is not None and schema.split_types == ["web_session"]
    assert [c.decimal for c in schema.event_properties] == [","]


def test_split_by_gives_types_per_channel_and_the_served_path_splits_alike(tmp_path: Path) -> None:
    cfg = load_config(_write_export(tmp_path))
    project = load_project_data(cfg.data, cfg.features)  # type: ignore[arg-type]
    events = project.dataset.interactions
    assert events["type"].astype(str).tolist() == [
        "web_session__newsletter", "web_session__newsletter", "web_session__sales", "web_session__partner", "web_session",
    ]  # fmt: skip
    schema = project.dataset.schema
    assert schema is not None
    served = [schema.interaction_type("web_session", c) for c in ["Newsletter", " Sales ", "Partner", None]]
    assert served == ["web_session__newsletter", "web_session__sales", "web_session__partner", "web_session"]
    assert schema.interaction_type("email_click", "Newsletter") == "email_click"  # not a split type


def test_a_split_type_with_an_unsplit_channel_elsewhere_is_refused(tmp_path: Path) -> None:
    pd.DataFrame({"contact": ["a"], "started": ["2024-01-02"], "channel": ["x"]}).to_csv(tmp_path / "sessions.csv", index=False)
    pd.DataFrame({"id": ["a"], "created": ["2024-01-01"], "won": [""]}).to_csv(tmp_path / "leads.csv", index=False)
    path = _config(tmp_path, [_sessions(split_by="channel"), _sessions(channel="channel")])
    cfg = load_config(path)
    with pytest.raises(ValueError, match=r"data\.interactions\.1: 1 events of type 'web_session' have a channel, which data\.interactions\.0\.split_by splits"):
        load_project_data(cfg.data, cfg.features)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # A rare split folds into its type, which then has enough events of its own.
        ({"email_click__newsletter": 50, "email_click__partner": 5, "email_click": 26}, ["email_click__newsletter", "email_click"]),
        ({"email_click__newsletter": 50, "email_click__partner": 5}, ["email_click__newsletter"]),
        ({"email_click__a": 20, "email_click__b": 20}, ["email_click"]),
    ],
)
def test_rare_splits_fold_into_their_type_in_the_learned_vocabulary(counts: dict[str, int], expected: list[str]) -> None:
    assert frequent_types(counts, 30) == expected


def test_the_engine_counts_a_rare_split_as_its_type_on_both_paths() -> None:
    assert counted_as("email_click__partner", SPEC) == "email_click"
    assert counted_as("email_click__newsletter", SPEC) == "email_click__newsletter"
    assert counted_as("web_session__sales", SPEC) == "web_session"
    assert counted_as("chat__sales", SPEC) is None
    types = ["email_click__partner", "email_click__newsletter", "email_click", "chat__x"]
    leads, events = _world([(0, 1.0 + i, t, 1.0, None) for i, t in enumerate(types)])
    events["type"] = events["type"].astype("string[pyarrow]")  # the Arrow path of the batch executor
    row = snapshot_features(leads, events, _snaps(leads, 10.0), SPEC).row(0)
    assert (row["n_email_click_total"], row["n_email_click_newsletter_total"], row["n_other_events_total"]) == (2, 1, 1)


# -- 3. batch == one lead, no future leakage -------------------------------------------------

_values = st.one_of(st.none(), st.floats(0, 500, allow_nan=False, allow_infinity=False), st.integers(0, 40).map(float))
event_strategy = st.lists(
    st.tuples(
        st.integers(0, 2),  # lead
        st.floats(0, 120, allow_nan=False),  # day after creation
        st.sampled_from([*TYPES, "email_click__partner", "chat"]),
        _values,  # pages
        _values,  # amount
    ),
    max_size=40,
)


def _world(events: list[tuple[int, float, str, float | None, float | None]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    leads = pd.DataFrame({"lead_id": ["L0", "L1", "L2"], "created_at": [T0, T0 + pd.Timedelta(days=3), T0 + pd.Timedelta(hours=5)]})
    created = dict(zip(leads["lead_id"], leads["created_at"], strict=True))
    frame = pd.DataFrame(
        {
            "lead_id": [f"L{e[0]}" for e in events],
            "occurred_at": pd.to_datetime([created[f"L{e[0]}"] + pd.Timedelta(days=e[1]) for e in events], utc=True),
            "type": [e[2] for e in events],
            "pages": np.array([np.nan if e[3] is None else e[3] for e in events], dtype=np.float64),
            "amount": np.array([np.nan if e[4] is None else e[4] for e in events], dtype=np.float64),
        }
    )
    return leads, frame


def _snaps(leads: pd.DataFrame, as_of_day: float) -> pd.DataFrame:
    return pd.DataFrame({"lead_id": leads["lead_id"], "as_of": [T0 + pd.Timedelta(days=as_of_day)] * len(leads)})


def _equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return all(np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=a[c].dtype.kind == "f") for c in a.columns)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_strategy, as_of_day=st.floats(3, 150, allow_nan=False))
def test_serving_path_equals_training_path_with_properties(events, as_of_day: float) -> None:
    leads, frame = _world(events)
    snaps = _snaps(leads, as_of_day)
    batch = snapshot_features(leads, frame, snaps, SPEC).to_frame(SPEC)
    for i, lead in leads.iterrows():
        own = frame[frame["lead_id"] == lead["lead_id"]]
        # A lead sends only some properties: one left out is missing on every event.
        given_properties = {"pages": own["pages"].tolist()} if own["amount"].isna().all() else {"pages": own["pages"].tolist(), "amount": own["amount"].tolist()}
        one = lead_features(
            int(to_epoch_seconds(pd.Series([lead["created_at"]]))[0]),
            {},
            to_epoch_seconds(own["occurred_at"]),
            own["type"].tolist(),
            int(to_epoch_seconds(pd.Series([snaps["as_of"].iloc[0]]))[0]),
            SPEC,
            given_properties,
        ).to_frame(SPEC)
        assert _equal(batch.iloc[[i]].reset_index(drop=True), one)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(past=event_strategy, future=event_strategy, as_of_day=st.floats(3, 150, allow_nan=False))
def test_events_after_as_of_never_change_a_property_feature(past, future, as_of_day: float) -> None:
    leads, events = _world(past)
    snaps = _snaps(leads, as_of_day)
    before = snapshot_features(leads, events, snaps, SPEC).to_frame(SPEC)
    _, extra = _world(future)
    extra["occurred_at"] = snaps["as_of"].iloc[0] + pd.Timedelta(seconds=1) + (extra["occurred_at"] - T0)
    after = snapshot_features(leads, pd.concat([events, extra], ignore_index=True), snaps, SPEC).to_frame(SPEC)
    assert _equal(before, after)


@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        ("sum_pages_7d", 5.0),  # days 4 (2 pages) and 9.5 (3 pages); day 3 is exactly 7 days back: out
        ("max_pages_7d", 3.0),
        ("sum_pages_30d", 15.0),
        ("sum_pages_total", 15.0),
        ("max_amount_7d", math.nan),  # no event of the window carries an amount
        ("max_amount_total", 900.0),
    ],
)
def test_window_values(feature: str, expected: float) -> None:
    rows = [(0, 3.0, "web_session", 10.0, 900.0), (0, 4.0, "web_session", 2.0, None), (0, 9.5, "web_session", 3.0, None),
            (0, 10.5, "web_session", 99.0, 5000.0), (0, 6.0, "web_session", None, None)]  # fmt: skip
    leads, events = _world(rows)
    value = snapshot_features(leads, events, _snaps(leads, 10.0), SPEC).row(0)[feature]
    assert value == expected or (math.isnan(expected) and math.isnan(value))


def test_a_missing_property_column_names_it() -> None:
    leads, events = _world([(0, 1.0, "web_session", 1.0, None)])
    with pytest.raises(ValueError, match=r"no column for the event properties \['amount'\]"):
        snapshot_features(leads, events.drop(columns=["amount"]), _snaps(leads, 5.0), SPEC)


# -- 4. labels --------------------------------------------------------------------------------


def _values_of(**changes: float) -> dict[str, object]:
    values: dict[str, object] = {name: 0.0 for name in SPEC.behaviour_features()}
    for name in SPEC.behaviour_features():
        if name.startswith(("days_since_", "max_")):
            values[name] = math.nan
    values.update(changes)
    return values


@pytest.mark.parametrize(
    ("driver", "changes", "english", "french"),
    [
        ("pages", {"sum_pages_7d": 42.0, "sum_pages_30d": 50.0, "sum_pages_total": 50.0},
         "42 pages viewed in the last 7 days", "42 pages vues au cours des 7 derniers jours"),
        ("pages", {"sum_pages_total": 1204.5}, "1,204.5 pages viewed since the lead was created", "1 204,5 pages vues depuis la création du lead"),
        ("pages", {}, "No pages viewed recorded", "Pages vues : aucune valeur"),
        ("amount", {"max_amount_30d": 1500.0, "max_amount_total": 1500.0}, "Highest amount: 1,500 in the last 30 days",
         "Amount, maximum : 1 500 au cours des 30 derniers jours"),
        ("email_click__newsletter", {"n_email_click_newsletter_total": 1.0, "days_since_email_click_newsletter": 2.0},
         "Clicked a link in our emails (newsletter) 2 days ago", "A cliqué dans un de nos emails (newsletter) il y a 2 jours"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("language", LANGUAGES)
def test_property_and_split_labels(driver: str, changes: dict, english: str, french: str, language: str) -> None:
    assert describe_driver(driver, _values_of(**changes), SPEC, language).label == {"en": english, "fr": french}[language]


_NUMBER = re.compile(r"\d[\d,  ]*(?:[.,]\d+)?")


def _numbers_in(label: str, language: str) -> list[float]:
    out = []
    for text in _NUMBER.findall(label):
        text = text.strip().replace(" ", "").replace(" ", "")
        text = text.replace(",", ".") if language == "fr" else text.replace(",", "")
        out.append(float(text))
    return out


@st.composite
def _property_values(draw: st.DrawFn) -> dict[str, object]:
    """Property features as the engine builds them: window sums nested, maxima missing without a value."""
    values = _values_of()
    for name, aggregates in SPEC.properties.items():
        seen = draw(st.lists(st.floats(0, 5000, allow_nan=False).map(lambda x: round(x, 3)), max_size=4))
        cut = sorted(draw(st.lists(st.integers(0, len(seen)), min_size=len(SPEC.windows_days), max_size=len(SPEC.windows_days))))
        for window, n in zip([*SPEC.windows_days, None], [*cut, len(seen)], strict=True):
            part = seen[:n]
            if "sum" in aggregates:
                values[property_feature(name, "sum", window)] = float(sum(part))
            if "max" in aggregates:
                values[property_feature(name, "max", window)] = max(part) if part else math.nan
    return values


@settings(max_examples=150, deadline=None)
@given(values=_property_values(), language=st.sampled_from(LANGUAGES))
def test_a_property_reason_quotes_the_value_of_the_feature_it_names(values: dict[str, object], language: str) -> None:
    for name in SPEC.properties:
        assert all(driver_of(f, SPEC) == name for f in SPEC.property_features() if f.split("_", 1)[1].startswith(name + "_"))
        phrase = describe_driver(name, values, SPEC, language)
        named = values[phrase.feature]
        assert driver_of(phrase.feature, SPEC) == name
        if phrase.value is None:
            assert math.isnan(named)  # type: ignore[arg-type]
            continue
        assert phrase.value == (int(named) if float(named).is_integer() else round(float(named), 1)), (phrase, named)  # type: ignore[arg-type]
        if phrase.value != 0:
            assert phrase.value in _numbers_in(phrase.label, language), phrase
        assert "_" not in phrase.label


def test_property_buckets_read_in_words() -> None:
    assert describe_bucket("sum_pages_7d", 10, None, SPEC, "en") == "Pages viewed, total in the last 7 days: 10 or more"
    assert describe_bucket("max_amount_total", None, 2.5, SPEC, "fr") == "Amount, maximum (depuis la création) : moins de 2,5"


# -- 5. a data: config whose property carries the signal, trained and served ------------------


def _signal_export(folder: Path, n: int = 700, seed: int = 5) -> Path:
    """Leads whose web sessions have more pages the likelier they convert; clicks split by channel."""
    rng = np.random.default_rng(seed)
    created = T0 + pd.to_timedelta(rng.uniform(0, 330, n), unit="D")
    intent = rng.uniform(0, 1, n)
    converts = rng.uniform(0, 1, n) < 0.08 + 0.6 * intent**2
    converted_at = [c + pd.Timedelta(days=float(d)) if w else pd.NaT for c, d, w in zip(created, rng.uniform(10, 50, n), converts, strict=True)]
    ids = [f"L{i:04d}" for i in range(n)]
    leads = pd.DataFrame({
        "id": ids, "created": created.strftime("%Y-%m-%d %H:%M:%S"),
        "won": [c.strftime("%Y-%m-%d %H:%M:%S") if pd.notna(c) else "" for c in converted_at],
        "industry": rng.choice(["software", "retail", "other"], n),
    })  # fmt: skip
    rows = []
    for i in range(n):
        for _ in range(rng.poisson(5) + 1):
            at = created[i] + pd.Timedelta(days=float(rng.uniform(0, 9)))
            pages = rng.poisson(1 + 14 * intent[i])
            rows.append((ids[i], at.strftime("%Y-%m-%d %H:%M:%S"), f"{pages},0" if rng.uniform() > 0.02 else "??",
                         rng.choice(["Newsletter", "Sales", "Partner"], p=[0.55, 0.44, 0.01])))  # fmt: skip
    sessions = pd.DataFrame(rows, columns=["contact", "started", "pages_per_session", "channel"])
    leads.to_csv(folder / "leads.csv", index=False)
    sessions.to_csv(folder / "sessions.csv", index=False, sep=";")
    (folder / "grid.yaml").write_text(yaml.safe_dump(
        {"name": "fit", "mql_threshold": 10, "rules": [{"label": "Software", "points": 10, "feature": "industry", "in": ["software"]}]}
    ))  # fmt: skip
    raw = {
        "data": {
            "exported_at": "2025-03-01T00:00:00Z",
            "leads": {"source": "leads.csv", "id": "id", "created_at": "created", "outcome": {"column": "won", "kind": "date"}},
            "columns": {"categorical": ["industry"]},
            "interactions": [_sessions(
                source={"path": "sessions.csv", "csv": {"separator": ";", "decimal": ","}},
                properties={"pages": {"column": "pages_per_session", "aggregate": ["sum", "max"]}}, split_by="channel",
            )],
        },
        "features": {"windows_days": [7, 30], "property_labels": {"pages": {"en": {"title": "Pages viewed", "sum": "{x} pages viewed"}}}},
        "training": {"grid": "grid.yaml", "n_bootstrap": 0, "snapshot_offsets_days": [0, 3, 10], "horizon_days": 60},
    }  # fmt: skip
    path = folder / "leadscore.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def trained_on_pages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pages")
    path = _signal_export(folder)
    bundle = folder / "bundle"
    result = runner.invoke(app, ["train", "--config", str(path), "--no-mlflow", "--bundle-out", str(bundle),
                                 "--quarantine-out", str(folder / "q.csv")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pages_per_session" in result.output and "kept, value set to missing" in result.output  # "??" counted
    return path, bundle


def test_a_property_carrying_signal_is_used_by_the_model(trained_on_pages: tuple[Path, Path]) -> None:
    _, bundle = trained_on_pages
    model = ScoringModel.load(bundle)
    assert set(model.spec.property_features()) <= set(model.feature_names)
    assert "sum_pages_7d" in model.feature_names
    # The learned vocabulary: frequent channels split the type, the rare one folds into it.
    assert {"web_session__newsletter", "web_session__sales"} <= set(model.spec.interaction_types)
    assert "web_session__partner" not in model.spec.interaction_types
    assert model.schema.split_types == ["web_session"]
    drivers = {d["driver"]: d for d in json.loads((bundle / IMPORTANCE_FILE).read_text())["drivers"]}
    assert drivers["pages"]["share_of_total"] > 0.05, {k: v["share_of_total"] for k, v in drivers.items()}
    if hasattr(model.booster, "feature_importance"):
        gain = dict(zip(model.feature_names, model.booster.feature_importance("gain"), strict=True))
        assert sum(gain[f] for f in model.spec.property_features()) > 0


def test_served_properties_score_as_the_batch_path(trained_on_pages: tuple[Path, Path]) -> None:
    path, bundle = trained_on_pages
    model = ScoringModel.load(bundle)
    cfg = load_config(path)
    dataset = load_project_data(cfg.data, model.spec).dataset  # type: ignore[arg-type]
    raw = pd.read_csv(path.parent / "sessions.csv", sep=";", dtype=str)
    as_of = datetime(2024, 12, 20, tzinfo=UTC)
    leads = dataset.leads[dataset.leads["created_at"] <= pd.Timestamp(as_of)].head(25)
    batch = score_table(model, leads, dataset.interactions, as_of).set_index("lead_id")
    for _, lead in leads.iterrows():
        own = raw[raw["contact"] == lead["lead_id"]]
        request = LeadIn(
            lead_id=lead["lead_id"],
            created_at=lead["created_at"].to_pydatetime(),
            attributes={"industry": lead["industry"]},
            # As the CRM writes them: "12,0" with the export's decimal comma, "??" left out.
            interactions=[
                InteractionIn(type="web_session", occurred_at=pd.Timestamp(r.started, tz="UTC").to_pydatetime(), channel=r.channel,
                              properties={"pages_per_session": r.pages_per_session} if r.pages_per_session != "??" else {})
                for r in own.itertuples()
            ],
        )  # fmt: skip
        one = score_lead(model, request, as_of, with_reasons=True)
        assert one.probability == batch.loc[lead["lead_id"], "probability"], lead["lead_id"]
        for reason in one.reasons["up"] + one.reasons["down"]:  # type: ignore[index]
            assert "_" not in reason.label


def test_an_unreadable_served_property_is_refused_naming_the_field(trained_on_pages: tuple[Path, Path]) -> None:
    model = ScoringModel.load(trained_on_pages[1])
    lead = LeadIn(lead_id="x", created_at=datetime(2024, 5, 1, tzinfo=UTC), interactions=[
        InteractionIn(type="web_session", occurred_at=datetime(2024, 5, 2, tzinfo=UTC), properties={"pages": "many"})
    ])  # fmt: skip
    with pytest.raises(LeadRejected, match=r"interactions\.0\.properties\.pages: must be a finite number"):
        score_lead(model, lead, datetime(2024, 5, 3, tzinfo=UTC))
    unknown = lead.model_copy(update={"interactions": [
        InteractionIn(type="web_session", occurred_at=datetime(2024, 5, 2, tzinfo=UTC), properties={"scrolls": 3})
    ]})  # fmt: skip
    assert any("properties not used by this model: ['scrolls']" in w for w in score_lead(model, unknown, datetime(2024, 5, 3, tzinfo=UTC)).warnings)
