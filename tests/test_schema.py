"""The lead schema: the one normaliser of raw CRM values, for training and every serving path.

Code tests on small schemas; a property test that the frame path and the one-record path read
every value alike; model tests that a raw record (the export's own column names and values)
scores exactly as its training row did, through `score_lead` and through the real server; and a
property test that whitespace, the case of missing tokens and the notation of a time zone never
change a score.
"""

from __future__ import annotations

import json
import math
import os
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from benchmarks.local_server import start_server, stop
from features.engine import lead_attribute_rows, snapshot_features
from features.schema import AttributeColumn, LeadSchema, TimeRule, parse_time_column
from model.bundle import META_FILE, ScoringModel
from model.scoring import LeadIn, LeadRejected, rounded_probability, score_lead

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LEADS_CSV = PROJECT_ROOT.parent / "shared" / "datasets" / "x-education" / "Leads.csv"
EXAMPLE = PROJECT_ROOT / "examples" / "x-education.yaml"
BATCH = 250  # leads per POST /score_batch: well inside its 1,000 leads and 5 MiB
SAMPLE = 25  # leads also sent one by one to POST /score

SCHEMA = LeadSchema(
    attributes=[
        AttributeColumn(source="Lead Source", name="lead_source", kind="category"),
        AttributeColumn(source="TotalVisits", name="total_visits", kind="number"),
        AttributeColumn(source="Montant", name="amount", kind="number", decimal=",", thousands="."),
        AttributeColumn(source="E-mail", name="email", kind="email"),
    ],
    missing_values=["Select", "N/A"],
)


def _column(name: str) -> AttributeColumn:
    return SCHEMA.column(name)


# -- code tests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("Lead Source", " software", "software"),
        ("lead_source", "software\t", "software"),
        ("Lead Source", "Select", None),
        ("Lead Source", " select ", None),
        ("Lead Source", "SELECT", None),
        ("Lead Source", "", None),
        ("Lead Source", "Selected", "Selected"),
        ("TotalVisits", "5", 5.0),
        ("TotalVisits", " 5.0 ", 5.0),
        ("TotalVisits", 5, 5.0),
        ("TotalVisits", "N/A", math.nan),
        ("TotalVisits", "", math.nan),
        ("Montant", "1.234,5", 1234.5),
        ("Montant", "12,75", 12.75),
        ("E-mail", " jane@acme.com ", "jane@acme.com"),
        ("E-mail", "select", None),
    ],
)  # fmt: skip
def test_one_record_reads_raw_values(key: str, raw: object, expected: object) -> None:
    values, unknown, problems = SCHEMA.normalise_attributes({key: raw})

    assert (unknown, problems) == ([], [])
    got = values[SCHEMA.column(key).name]
    assert (math.isnan(got) and math.isnan(expected)) if isinstance(expected, float) and math.isnan(expected) else got == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("about fifty", "text that is not one"),
        ("inf", "text that is not one"),
        ("1e999", "infinite"),
        (True, "boolean"),
        (10**400, "beyond float range"),
        ("1_000", "text that is not one"),
    ],
)  # fmt: skip
def test_a_number_it_cannot_read_is_a_problem_naming_the_field_in_both_paths(raw: object, reason: str) -> None:
    _values, _unknown, problems = SCHEMA.normalise_attributes({"TotalVisits": raw})
    numbers, bad = SCHEMA.normalise_column(pd.Series([raw, "3"], dtype=object), _column("total_visits"))

    assert [p.field for p in problems] == ["attributes.TotalVisits"]
    assert reason in problems[0].reason
    assert bad.tolist() == [True, False]
    assert math.isnan(numbers[0]) and numbers[1] == 3.0


def test_an_attribute_sent_under_both_names_is_refused() -> None:
    _values, _unknown, problems = SCHEMA.normalise_attributes({"Lead Source": "web", "lead_source": "web"})

    assert [p.field for p in problems] == ["attributes.lead_source"]


def test_unknown_attributes_are_listed_not_read() -> None:
    values, unknown, _problems = SCHEMA.normalise_attributes({"Favourite colour": "blue", "Lead Source": "web"})

    assert unknown == ["Favourite colour"] and values == {"lead_source": "web"}


@pytest.mark.parametrize(
    ("text", "zone", "utc"),
    [
        ("2024-03-01T10:00:00Z", "UTC", "2024-03-01T10:00:00+00:00"),
        ("2024-03-01T10:00:00+00:00", "UTC", "2024-03-01T10:00:00+00:00"),
        ("2024-03-01T11:00:00+01:00", "UTC", "2024-03-01T10:00:00+00:00"),
        ("2024-03-01T11:00:00", "Europe/Paris", "2024-03-01T10:00:00+00:00"),
        ("2024-07-01T12:00:00", "Europe/Paris", "2024-07-01T10:00:00+00:00"),
    ],
)  # fmt: skip
def test_times_read_alike_in_both_paths(text: str, zone: str, utc: str) -> None:
    schema = LeadSchema(created_at=TimeRule(source="created", timezone=zone))
    frame, bad = parse_time_column(pd.Series([text]), zone)
    one, problem = schema.instant(datetime.fromisoformat(text.replace("Z", "+00:00")), schema.created_at)

    assert problem is None and not bad[0]
    assert one is not None and one.isoformat() == utc == frame[0].isoformat()


def test_a_naive_time_in_a_daylight_saving_change_is_refused_in_both_paths() -> None:
    schema = LeadSchema(created_at=TimeRule(source="created", timezone="Europe/Paris"))
    _frame, bad = parse_time_column(pd.Series(["2024-10-27T02:30:00"]), "Europe/Paris")
    one, problem = schema.instant(datetime(2024, 10, 27, 2, 30), schema.created_at)

    assert bad[0] and one is None and problem is not None and "Europe/Paris" in problem


def test_the_schema_round_trips_as_json() -> None:
    schema = SCHEMA.model_copy(update={"type_map": {"Email Opened": "email_open"}})

    assert LeadSchema.model_validate_json(schema.model_dump_json()) == schema


# -- the two paths read every value alike ----------------------------------------------------

_NUMBERISH = st.text(alphabet="0123456789.,-+eE _\t", max_size=12)
_RAW_VALUES = st.one_of(
    st.none(),
    _NUMBERISH,
    st.text(max_size=8),
    st.sampled_from(["Select", " select", "N/A", "n/a ", "", "  ", "Infinity", "nan", "1.234,5", "٣"]),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_RAW_VALUES, min_size=1, max_size=30), st.sampled_from(["total_visits", "amount", "lead_source", "email"]))
def test_frame_path_equals_one_record_path(raw: list[object], name: str) -> None:
    column = _column(name)
    frame_values, frame_bad = SCHEMA.normalise_column(pd.Series(raw, dtype=object), column)
    texts = [v for v in raw if v is None or isinstance(v, str)]
    text_values, text_bad = SCHEMA.normalise_column(pd.Series(texts, dtype="str"), column) if texts else (None, None)

    for values, bad, inputs in ((frame_values, frame_bad, raw), (text_values, text_bad, texts)):
        if values is None:
            continue
        for got, was_bad, value in zip(values.tolist(), bad.tolist(), inputs, strict=True):
            expected, reason = SCHEMA.value(value, column)
            assert was_bad == (reason is not None), value
            if column.kind == "number":
                assert (math.isnan(got) and math.isnan(expected)) or got == expected, value
            else:
                assert (None if pd.isna(got) else got) == expected, value


# -- raw records score as their training rows did --------------------------------------------


def _score_over_http(bundle: Path, env: dict[str, str], workdir: Path, key_header: dict[str, str],
                     leads: list[dict[str, object]], as_of: str) -> tuple[dict[str, float], dict[str, float]]:
    """(lead_id -> probability from POST /score_batch, from POST /score for a sample) of the real server."""
    log = workdir / "server.log"
    server_env = {**os.environ, **env, "LEADSCORE_BUNDLE": str(bundle), "BENTOML_HOME": str(workdir / "bentoml"),
                  "BENTOML_DO_NOT_TRACK": "true"}
    process, url = start_server(server_env, log, ready_timeout_s=120, fail=pytest.fail)
    try:
        batch: dict[str, float] = {}
        one: dict[str, float] = {}
        with httpx.Client(base_url=url, timeout=120, headers=key_header) as http:
            for start in range(0, len(leads), BATCH):
                response = http.post("/score_batch", json={"leads": leads[start:start + BATCH], "as_of": as_of})
                assert response.status_code == 200, response.text[:2000]
                batch.update({r["lead_id"]: r["probability"] for r in response.json()["results"]})
            for lead in random.Random(0).sample(leads, min(SAMPLE, len(leads))):
                response = http.post("/score", json={"lead": lead, "as_of": as_of, "explain": False})
                assert response.status_code == 200, response.text[:2000]
                one[response.json()["lead_id"]] = response.json()["probability"]
        return batch, one
    finally:
        stop(process)


def _differing(expected: dict[str, float], got: dict[str, float]) -> list[str]:
    return [lead_id for lead_id, p in got.items() if p != expected[lead_id]]


@pytest.fixture(scope="module")
def xeducation_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained by `leadscore train --config examples/x-education.yaml` (the real export)."""
    from leadscore.cli import app

    out = tmp_path_factory.mktemp("xeducation") / "bundle"
    cwd = Path.cwd()
    os.chdir(PROJECT_ROOT)  # the example's paths are relative to the project root
    try:
        result = CliRunner().invoke(
            app, ["train", "--config", str(EXAMPLE), "--data", str(LEADS_CSV), "--no-mlflow", "--bundle-out", str(out)]
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return out


def _xeducation_raw(model: ScoringModel) -> tuple[dict[str, float], list[dict[str, object]]]:
    """(lead_id -> training-time probability, each lead's raw record keyed by the export's names)."""
    from sources.loader import load_project_data
    from training.config import load_config

    config = load_config(EXAMPLE)
    assert config.data is not None
    project = load_project_data(config.data, model.spec, leads_path=LEADS_CSV)
    leads = project.dataset.leads
    probability = rounded_probability(model.probability(model.encode(lead_attribute_rows(leads, model.spec))))
    trained = dict(zip(leads["lead_id"], probability.tolist(), strict=True))
    raw = pd.read_csv(LEADS_CSV, dtype=str, keep_default_na=False)
    exported = [c.source for c in model.schema.attributes]
    records = [
        {"lead_id": row[config.data.leads.id], "created_at": "2024-06-01T00:00:00Z", "attributes": {c: row[c] for c in exported}}
        for row in raw.to_dict("records")
    ]
    return trained, records


@pytest.mark.xeducation
@pytest.mark.slow
@pytest.mark.skipif(not LEADS_CSV.is_file(), reason=f"{LEADS_CSV} is absent (the export is not part of the project)")
def test_every_raw_xeducation_lead_scores_as_its_training_row(
    xeducation_bundle: Path, tmp_path: Path, service_env: dict[str, str], service_keys
) -> None:
    model = ScoringModel.load(xeducation_bundle)
    trained, records = _xeducation_raw(model)
    assert model.schema.column("Lead Source").name == "lead_source" and "Select" in model.schema.missing_values
    assert len(records) == len(trained) == 9240

    in_process = {
        r["lead_id"]: score_lead(model, LeadIn.model_validate(r), datetime(2024, 6, 1, tzinfo=UTC), with_reasons=False).probability
        for r in records
    }
    batch, one = _score_over_http(xeducation_bundle, service_env, tmp_path, service_keys.header("score"), records, "2024-06-01T00:00:00Z")

    assert _differing(trained, in_process) == []
    assert len(batch) == len(trained) and _differing(trained, batch) == []
    assert len(one) == SAMPLE and _differing(trained, one) == []


def _simulated_raw(simulated_dir: Path, spec_columns: list[str]) -> list[dict[str, object]]:
    """Every simulated lead as its raw record: the CSV text of its row and of its interactions."""
    leads = pd.read_csv(simulated_dir / "leads.csv", dtype=str, keep_default_na=False)
    events = pd.read_csv(simulated_dir / "interactions.csv", dtype=str, keep_default_na=False)
    by_lead = {k: g for k, g in events.groupby("lead_id", sort=False)}
    records = []
    for row in leads.to_dict("records"):
        own = by_lead.get(row["lead_id"])
        interactions = [] if own is None else [
            {"type": e["type"], "occurred_at": e["occurred_at"], "channel": e["channel"] or None} for e in own.to_dict("records")
        ]
        records.append({
            "lead_id": row["lead_id"], "created_at": row["created_at"],
            "attributes": {c: row[c] for c in spec_columns}, "interactions": interactions,
        })  # fmt: skip
    return records


@pytest.mark.slow
def test_every_raw_simulated_lead_scores_as_its_training_row(
    trained_bundle: Path, simulated_dir: Path, simulated_dataset, tmp_path: Path, service_env: dict[str, str], service_keys
) -> None:
    model = ScoringModel.load(trained_bundle)
    data = simulated_dataset
    as_of = data.data_end
    snapshots = pd.DataFrame({"lead_id": data.leads["lead_id"], "as_of": as_of})
    rows = snapshot_features(data.leads, data.interactions, snapshots, model.spec)
    trained = dict(zip(data.leads["lead_id"], rounded_probability(model.probability(model.encode(rows))).tolist(), strict=True))
    records = [r for r in _simulated_raw(simulated_dir, model.spec.attribute_columns()) if r["lead_id"] in trained]
    assert len(records) == len(trained) >= 2_900

    in_process = {
        r["lead_id"]: score_lead(model, LeadIn.model_validate(r), as_of.to_pydatetime(), with_reasons=False).probability for r in records
    }
    batch, one = _score_over_http(trained_bundle, service_env, tmp_path, service_keys.header("score"), records, as_of.isoformat())

    assert _differing(trained, in_process) == []
    assert len(batch) == len(trained) and _differing(trained, batch) == []
    assert len(one) == SAMPLE and _differing(trained, one) == []


def test_a_bundle_without_a_lead_schema_loads_with_its_feature_specs_defaults(trained_bundle: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((trained_bundle / META_FILE).read_text())
    assert meta.pop("lead_schema") is not None  # a new bundle stores it
    (old / META_FILE).write_text(json.dumps(meta))
    (old / "model.txt").write_bytes((trained_bundle / "model.txt").read_bytes())

    model = ScoringModel.load(old)

    assert model.meta.lead_schema is None
    assert model.schema == LeadSchema.from_spec(model.spec)
    assert model.schema.feature_names() == model.spec.attribute_columns()


# -- whitespace, missing-token case and zone notation never change a score -------------------

_WHITESPACE = st.sampled_from(["", " ", "  ", "\t", " \t", "\u00a0"])


def _case_variant(draw: st.DrawFn, token: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(token), max_size=len(token)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(token, flips, strict=True))


def _zoned(when: datetime, draw: st.DrawFn) -> str:
    """`when` (UTC) in one of its equivalent notations: Z, +00:00, or another offset."""
    notation = draw(st.sampled_from(["Z", "+00:00", "offset"]))
    if notation == "offset":
        minutes = draw(st.sampled_from([-480, -300, 60, 120, 330, 600]))
        local = when.astimezone(timezone(timedelta(minutes=minutes)))
        return local.isoformat()
    text = when.replace(tzinfo=None).isoformat()
    return text + ("Z" if notation == "Z" else "+00:00")


@pytest.fixture(scope="module")
def model_with_missing_tokens(trained_bundle: Path) -> ScoringModel:
    """The simulated model, its lead schema declaring "Select" and "N/A" as missing."""
    model = ScoringModel.load(trained_bundle)
    schema = model.schema.model_copy(update={"missing_values": ["Select", "N/A"]})
    return ScoringModel(model.booster, model.meta.model_copy(update={"lead_schema": LeadSchema.model_validate(schema.model_dump())}))


@pytest.fixture(scope="module")
def raw_simulated_leads(simulated_dir: Path, trained_bundle: Path) -> list[dict[str, object]]:
    model = ScoringModel.load(trained_bundle)
    return _simulated_raw(simulated_dir, model.spec.attribute_columns())[:200]


@pytest.fixture(scope="module")
def simulated_as_of(simulated_dataset) -> datetime:
    return simulated_dataset.data_end.to_pydatetime()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_whitespace_token_case_and_zone_notation_never_change_a_score(
    data: st.DataObject, model_with_missing_tokens: ScoringModel, raw_simulated_leads: list[dict[str, object]],
    simulated_as_of: datetime,
) -> None:
    model = model_with_missing_tokens
    lead = data.draw(st.sampled_from([r for r in raw_simulated_leads if r["interactions"]]))
    as_of = simulated_as_of
    blank = data.draw(st.sets(st.sampled_from(sorted(lead["attributes"]))))
    clean = {**lead, "attributes": {k: (None if k in blank else v) for k, v in lead["attributes"].items()}}

    def pad(value: object) -> object:
        return value if value in (None, "") else data.draw(_WHITESPACE) + str(value) + data.draw(_WHITESPACE)

    def stamp(text: str) -> str:
        return _zoned(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC), data.draw)

    token = data.draw(st.sampled_from(["Select", "N/A"]))
    perturbed = {
        "lead_id": lead["lead_id"],
        "created_at": stamp(lead["created_at"]),
        "attributes": {
            k: (data.draw(_WHITESPACE) + _case_variant(data.draw, token) + data.draw(_WHITESPACE)) if k in blank else pad(v)
            for k, v in lead["attributes"].items()
        },
        "interactions": [
            {**e, "type": pad(e["type"]), "occurred_at": stamp(e["occurred_at"])} for e in lead["interactions"]
        ],
    }

    expected = score_lead(model, LeadIn.model_validate(clean), as_of)
    got = score_lead(model, LeadIn.model_validate(perturbed), as_of)

    assert got.probability == expected.probability
    assert got.reasons == expected.reasons
    assert [w for w in got.warnings if "unseen" in w] == [w for w in expected.warnings if "unseen" in w]


def test_a_value_the_schema_cannot_read_is_a_400_style_rejection(model_with_missing_tokens: ScoringModel, simulated_as_of: datetime) -> None:
    lead = LeadIn(lead_id="L-1", created_at="2020-03-01T10:00:00Z", attributes={"employee_count": "about fifty"})

    with pytest.raises(LeadRejected) as rejected:
        score_lead(model_with_missing_tokens, lead, simulated_as_of)

    assert rejected.value.field == "attributes.employee_count"


def test_the_batch_path_reads_a_folder_by_the_models_schema(
    model_with_missing_tokens: ScoringModel, simulated_dataset, simulated_as_of: datetime
) -> None:
    from model.scoring import score_table

    leads = simulated_dataset.leads.head(50).copy()
    as_of = simulated_as_of
    expected = score_table(model_with_missing_tokens, leads.assign(industry=None), simulated_dataset.interactions, as_of)

    got = score_table(model_with_missing_tokens, leads.assign(industry=" select "), simulated_dataset.interactions, as_of)

    assert got["probability"].tolist() == expected["probability"].tolist()
