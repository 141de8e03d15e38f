"""Input faults of issue 14, item 1, on the data side: what a CRM, an export or a command line
sends that the service or the batch path must refuse by name, never crash on, never store.

Complements tests/test_attacker_faults.py (the faults as first found) with the variants that
still got through: timestamps out of range in exports and on the command line, numbers written
as text in other grammars, personal data in category fields of a batch, empty exports read
through a `data:` section, and client errors in the server log.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.bench_model import example_lead
from features.contract import validate
from features.schema import LeadSchema, TimeRule, parse_time_column
from features.spec import FeatureSpec
from leadscore.cli import app as cli
from model.scorelog import ScoreLogError, lead_key, open_score_log
from model.scoring import UNSEEN
from sources.loader import SourceError, load_project_data
from training.config import ProjectConfig

AS_OF = "2024-05-01T00:00:00Z"
CREATED_AT = "2024-03-01T10:00:00Z"
INTERACTIONS = ({"type": "pricing_page_view", "occurred_at": "2024-04-20T09:00:00Z"},)
PERSONAL = "jane.doe@example.com"
# In UTC these fall outside the years 1 to 9999 (Python cannot hold them)...
OUT_OF_PYTHON = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
# ... and these outside what a frame holds (pandas' nanosecond range, 1677-09-21 to 2262-04-11).
OUT_OF_FRAMES = ["1600-01-01T00:00:00Z", "2500-01-01", "0001-01-01", "9999-12-31T23:59:59"]
# Numbers written as text that pydantic would read as seconds since 1970.
NUMERIC_TEXT = ["1717232400", ".5", "1.7e9", "-1.5E+9", " 1717232400.5 "]
EMPTY_SPEC = FeatureSpec(categorical=[], numeric=[], email_column=None, interaction_types=["page_view"])


def a_lead(lead_id: str = "L-1", **changes: Any) -> dict[str, Any]:
    return example_lead(lead_id, CREATED_AT, INTERACTIONS, **changes)


@pytest.fixture(scope="module")
def score_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inputs") / "logs" / "scores.db"


@pytest.fixture(scope="module")
async def client(trained_bundle: Path, score_log: Path, start_service) -> AsyncIterator[httpx.AsyncClient]:
    """The ASGI app serving the trained bundle with a SQLite score log, called with a score key."""
    async with start_service(trained_bundle, LEADSCORE_SCORE_LOG=f"sqlite:///{score_log}") as http:
        yield http


def refused_at(response: httpx.Response, loc: list[str | int]) -> str:
    """The message of the 400 naming `loc`."""
    assert response.status_code == 400, response.text
    messages = [e["msg"] for e in response.json()["detail"] if e["loc"] == loc]
    assert messages, response.json()
    return messages[0]


def logged_features(score_log: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(score_log) as db:
        return [json.loads(features) for (features,) in db.execute("SELECT features FROM score_log ORDER BY id")]


# -- 1: timestamps out of range, in every path ---------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("when", OUT_OF_PYTHON)
async def test_out_of_range_times_are_400_in_the_fields_not_covered_before(client: httpx.AsyncClient, when: str) -> None:
    occurred = await client.post("/score", json={"lead": a_lead(interactions=[{"type": "page_view", "occurred_at": when}])})
    batch = await client.post("/score_batch", json={"leads": [a_lead("L-0"), a_lead("L-1", created_at=when)], "as_of": AS_OF})

    assert "out of range" in refused_at(occurred, ["lead", "interactions", 0, "occurred_at"])
    assert "out of range" in refused_at(batch, ["leads", 1, "created_at"])


@pytest.mark.parametrize(("naive", "zone"), [(datetime(1, 1, 1), "Etc/GMT-14"), (datetime(9999, 12, 31, 23), "Etc/GMT+12")])
def test_a_naive_time_read_in_a_far_zone_out_of_range_is_a_problem_not_an_error(naive: datetime, zone: str) -> None:
    schema = LeadSchema(created_at=TimeRule(source="created_at", timezone=zone))

    utc, problem = schema.instant(naive, schema.created_at)

    assert utc is None and problem is not None and "outside the years 1 to 9999" in problem


@pytest.mark.parametrize("text", OUT_OF_PYTHON + OUT_OF_FRAMES)
@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati"])
def test_the_frame_path_marks_times_it_cannot_hold(text: str, zone: str) -> None:
    parsed, bad = parse_time_column(pd.Series([text, "2024-03-01T10:00:00Z", None]), zone)

    assert bad.tolist() == [True, False, False]
    assert pd.isna(parsed[0]) and parsed[1] == pd.Timestamp("2024-03-01T10:00:00Z") and pd.isna(parsed[2])


@pytest.mark.parametrize("when", ["0001-01-01", "1600-01-01", "2500-01-01", "9999-12-31T23:59:59"])
def test_a_typed_column_out_of_the_frame_range_is_marked(when: str) -> None:
    # Parquet and SQL give datetimes, which pandas 3 keeps in microseconds: years 1 to 9999.
    typed = pd.Series([pd.Timestamp(when), pd.Timestamp("2024-03-01")]).astype("datetime64[us]")

    parsed, bad = parse_time_column(typed)

    assert bad.tolist() == [True, False] and pd.isna(parsed[0])


def test_the_contract_quarantines_rows_dated_out_of_range_and_counts_add_up() -> None:
    leads = pd.DataFrame(
        {
            "lead_id": ["L-1", "L-2", "L-3", "L-4", "L-5"],
            "created_at": [*OUT_OF_PYTHON, "2500-01-01", "2024-01-01", "2024-01-02"],
            "converted_at": ["", "", "", "", "9999-12-31T23:59:59-14:00"],
        }
    )
    events = pd.DataFrame(
        {
            "lead_id": ["L-4", "L-4", "L-4"],
            "occurred_at": ["9999-12-31T23:59:59-14:00", "1600-01-01", "2024-01-01T00:00:00Z"],
            "type": ["page_view"] * 3,
        }
    )

    dataset = validate(leads, events, EMPTY_SPEC)

    assert dataset.leads["lead_id"].tolist() == ["L-4"]
    assert dataset.interactions["occurred_at"].tolist() == [pd.Timestamp("2024-01-01", tz="UTC")]
    # A stray timestamp must not define time: the data ends at the one lead that can be read.
    assert dataset.data_end == pd.Timestamp("2024-01-01", tz="UTC")
    rules = dataset.quarantine.groupby("rule")["lead_id"].apply(sorted).to_dict()
    assert rules["have an unparsable, out-of-range or empty created_at"] == ["L-1", "L-2", "L-3"]
    assert rules["have an unparsable or out-of-range converted_at"] == ["L-5"]
    assert rules["have an unparsable, out-of-range or empty occurred_at"] == ["L-4", "L-4"]
    assert len(dataset.leads) + (dataset.quarantine["table"] == "leads").sum() == len(leads)
    assert len(dataset.interactions) + (dataset.quarantine["table"] == "interactions").sum() == len(events)


def _load(raw: dict[str, Any]):
    config = ProjectConfig.model_validate({"data": raw})
    assert config.data is not None
    return load_project_data(config.data, config.features)


def _timed_export(path: Path) -> dict[str, Any]:
    return {
        "exported_at": "2024-06-01T00:00:00Z",
        "leads": {"source": str(path), "id": "id", "created_at": "created", "outcome": {"column": "won", "kind": "date"}},
        "columns": {"categorical": ["plan"]},
    }


def test_an_export_read_through_a_data_section_quarantines_dates_out_of_range(tmp_path: Path) -> None:
    export = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "created": [*OUT_OF_PYTHON, "2500-01-01", "2024-01-01", "2024-01-02"],
            "won": ["", "", "", "2024-02-01", "0001-01-01T00:00:00+14:00"],
            "plan": list("xyxyx"),
        }
    )
    export.to_csv(tmp_path / "leads.csv", index=False)

    dataset = _load(_timed_export(tmp_path / "leads.csv")).dataset

    assert dataset.leads["lead_id"].tolist() == ["d"]
    assert sorted(dataset.quarantine["lead_id"]) == ["a", "b", "c", "e"]


def test_leadscore_score_on_a_data_folder_sets_out_of_range_rows_aside(trained_bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lead = a_lead("L-ok")
    columns = ["email", "industry", "company_size", "employee_count", "country", "job_role", "seniority", "source", "marketing_consent"]
    rows = [{"lead_id": f"L-{i}", "created_at": when, **{c: lead["attributes"][c] for c in columns}} for i, when in enumerate(OUT_OF_PYTHON)]
    rows.append({"lead_id": "L-ok", "created_at": CREATED_AT, **{c: lead["attributes"][c] for c in columns}})
    pd.DataFrame(rows).to_csv(data / "leads.csv", index=False)
    pd.DataFrame(
        {"lead_id": ["L-ok", "L-ok"], "occurred_at": ["2024-04-20T09:00:00Z", OUT_OF_PYTHON[1]], "type": ["pricing_page_view", "page_view"]}
    ).to_csv(data / "interactions.csv", index=False)
    out = tmp_path / "scores.csv"

    result = CliRunner().invoke(cli, ["score", "-i", str(data), "-o", str(out), "--bundle", str(trained_bundle), "--as-of", AS_OF, "--no-reasons"])

    assert result.exit_code == 0, result.output
    assert pd.read_csv(out)["lead_id"].tolist() == ["L-ok"]
    assert "out-of-range" in result.output


@pytest.mark.parametrize(
    ("as_of", "says"),
    [
        (OUT_OF_PYTHON[0], "out of range"),
        ("1717232400", "not a number written as text"),
        ("1.7e9", "not a number written as text"),
        ("1960-01-01T00:00:00Z", "before 1970"),
        ("next tuesday", "ISO 8601"),
    ],
)
def test_leadscore_score_refuses_an_as_of_it_cannot_read_in_one_line(trained_bundle: Path, tmp_path: Path, as_of: str, says: str) -> None:
    leads = tmp_path / "leads.jsonl"
    leads.write_text(json.dumps(a_lead()) + "\n")

    result = CliRunner().invoke(cli, ["score", "-i", str(leads), "-o", str(tmp_path / "out.jsonl"), "--bundle", str(trained_bundle), "--as-of", as_of])

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --as-of") and says in lines[0], result.output


@pytest.mark.parametrize("since", [*OUT_OF_PYTHON, "99999999d"])
def test_monitor_since_out_of_range_is_an_error_naming_the_option(since: str) -> None:
    from training.workflow import WorkflowError, parse_since

    with pytest.raises(WorkflowError, match=r"--since .* is out of range"):
        parse_since(since)


def test_leadscore_score_on_json_lines_names_the_lines_dated_out_of_range(trained_bundle: Path, tmp_path: Path) -> None:
    leads = tmp_path / "leads.jsonl"
    bad_event = a_lead("L-2", interactions=[{"type": "page_view", "occurred_at": OUT_OF_PYTHON[1]}])
    leads.write_text("\n".join(json.dumps(lead) for lead in (a_lead("L-0"), a_lead("L-1", created_at=OUT_OF_PYTHON[0]), bad_event)) + "\n")
    out = tmp_path / "out.jsonl"

    result = CliRunner().invoke(cli, ["score", "-i", str(leads), "-o", str(out), "--bundle", str(trained_bundle), "--as-of", AS_OF])

    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = json.loads(out.with_suffix(".jsonl.errors.json").read_text())
    assert [e["line"] for e in errors] == [2, 3]
    assert all("out of range" in " ".join(e["error"]) for e in errors), errors
    assert [json.loads(line)["lead_id"] for line in out.read_text().splitlines()] == ["L-0"]


# -- 2: numbers written as text: read for numbers, refused for timestamps -----------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("text", NUMERIC_TEXT)
async def test_every_number_written_as_text_is_refused_as_a_timestamp(client: httpx.AsyncClient, text: str) -> None:
    created = await client.post("/score", json={"lead": a_lead(created_at=text), "as_of": AS_OF})
    occurred = await client.post("/score", json={"lead": a_lead(interactions=[{"type": "page_view", "occurred_at": text}]), "as_of": AS_OF})
    as_of = await client.post("/score", json={"lead": a_lead(), "as_of": text})

    assert "not a number written as text" in refused_at(created, ["lead", "created_at"])
    assert "not a number written as text" in refused_at(occurred, ["lead", "interactions", 0, "occurred_at"])
    assert "not a number written as text" in refused_at(as_of, ["as_of"])


@pytest.mark.anyio
async def test_a_json_number_is_refused_as_a_timestamp(client: httpx.AsyncClient) -> None:
    response = await client.post("/score", json={"lead": a_lead(created_at=1717232400), "as_of": AS_OF})

    assert "not a number" in refused_at(response, ["lead", "created_at"])


@pytest.mark.anyio
@pytest.mark.parametrize("text", ["250", " 250 ", "2.5e2", "250.0"])
async def test_a_number_written_as_text_is_read_as_that_number(client: httpx.AsyncClient, text: str) -> None:
    lead = a_lead()
    as_text = await client.post("/score", json={"lead": a_lead(attributes={**lead["attributes"], "employee_count": text}), "as_of": AS_OF})
    as_number = await client.post("/score", json={"lead": a_lead(attributes={**lead["attributes"], "employee_count": 250}), "as_of": AS_OF})

    assert as_text.status_code == as_number.status_code == 200, as_text.text
    assert as_text.json()["probability"] == as_number.json()["probability"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "says"),
    [("abc", "not one"), ("250 employees", "not one"), ("NaN", "not one"), ("Infinity", "not one"), (True, "boolean")],
)
async def test_text_that_is_no_number_is_refused_for_a_numeric_attribute(client: httpx.AsyncClient, value: object, says: str) -> None:
    lead = a_lead()
    response = await client.post("/score", json={"lead": a_lead(attributes={**lead["attributes"], "employee_count": value}), "as_of": AS_OF})

    assert says in refused_at(response, ["lead", "attributes", "employee_count"])


# -- 3: personal data in category fields, the score log's files, forget -------------------------------


@pytest.mark.anyio
async def test_a_batch_logs_the_unseen_marker_for_personal_data_in_any_category_field(client: httpx.AsyncClient, score_log: Path) -> None:
    lead = a_lead()
    leads = [
        a_lead("L-role", attributes={**lead["attributes"], "job_role": PERSONAL}),
        a_lead("L-industry", attributes={**lead["attributes"], "industry": f"  {PERSONAL} "}),
        a_lead("L-seen"),
    ]

    response = await client.post("/score_batch", json={"leads": leads, "as_of": AS_OF})

    assert response.status_code == 200, response.text
    logged = logged_features(score_log)[-3:]
    assert [row["job_role"] for row in logged] == [UNSEEN, "marketing", "marketing"]
    assert [row["industry"] for row in logged] == ["software", UNSEEN, "software"]
    assert PERSONAL not in score_log.read_bytes().decode("latin-1")
    assert stat.S_IMODE(score_log.stat().st_mode) == 0o600


def test_a_json_lines_score_log_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "scores.jsonl"

    open_score_log(str(path))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_a_score_log_left_readable_by_an_earlier_version_is_made_owner_only(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"scores.{'jsonl' if kind == 'jsonl' else 'db'}"
    if kind == "sqlite":
        sqlite3.connect(path).close()  # SQLite creates its files 0644
    else:
        path.write_text("")
    path.chmod(0o644)

    open_score_log(str(path) if kind == "jsonl" else f"sqlite:///{path}")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_lead_key_is_created_readable_by_its_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_STATE_DIR", str(tmp_path / "state"))

    lead_key()

    assert stat.S_IMODE((tmp_path / "state" / "lead_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


@pytest.mark.parametrize("kind", ["jsonl", "sqlite-folder", "sqlite-file"])
def test_forget_on_a_log_that_is_not_there_names_it_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setenv("LEADSCORE_LEAD_KEY", "test-lead-key-0123456789")
    missing = {"jsonl": tmp_path / "nowhere" / "scores.jsonl", "sqlite-folder": tmp_path / "nowhere" / "x.db", "sqlite-file": tmp_path / "x.db"}[kind]
    target = str(missing) if kind == "jsonl" else f"sqlite:///{missing}"

    result = CliRunner().invoke(cli, ["forget", PERSONAL, "--log", target])

    assert result.exit_code == 2, result.output
    assert str(missing) in result.output and "deleted" not in result.output
    assert not missing.exists() and (kind == "sqlite-file" or not missing.parent.exists())


def test_opening_a_missing_log_for_reading_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ScoreLogError, match="no such"):
        open_score_log(f"sqlite:///{tmp_path / 'x.db'}", create=False)
    assert not (tmp_path / "x.db").exists()


# -- 4: a client error is one line of the server log ------------------------------------------------


@pytest.mark.anyio
async def test_client_errors_log_no_traceback(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    bodies: list[tuple[str, bytes]] = [
        ("/score", json.dumps({"lead": a_lead(created_at=OUT_OF_PYTHON[0])}).encode()),
        ("/score", json.dumps({"lead": a_lead(created_at="1.7e9")}).encode()),
        ("/score_batch", json.dumps({"leads": [a_lead(interactions=[{"type": "x", "occurred_at": OUT_OF_PYTHON[1]}])]}).encode()),
        ("/score", json.dumps({"lead": a_lead(attributes={"employee_count": "250 employees"})}).encode()),
        ("/score", json.dumps({"lead": a_lead(), "as_of": "2024-01-01T00:00:00Z"}).encode()),  # before created_at
        ("/score", b'{"lead": {"lead_id": '),  # not JSON
        ("/score", b"[]"),
    ]
    with caplog.at_level(logging.DEBUG):
        for path, body in bodies:
            response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (path, response.text)
        scored = await client.post("/score", json={"lead": a_lead(), "as_of": AS_OF})  # the capture sees the service's log

    assert scored.status_code == 200 and any(r.name == "serving.service" and "score lead=" in r.getMessage() for r in caplog.records)
    noisy = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
    assert not noisy, [(r.name, r.levelname, r.getMessage()[:200]) for r in noisy]


# -- 5: training on empty exports read through a data: section --------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [("", "no header and no rows"), ("id,created,won,plan\n", "no rows, only a header")],
)
def test_an_empty_export_is_one_error_naming_the_file(tmp_path: Path, content: str, says: str) -> None:
    export = tmp_path / "leads.csv"
    export.write_text(content)

    with pytest.raises(SourceError) as raised:
        _load(_timed_export(export))

    assert str(raised.value) == f"data.leads.source ({export}): {says}: nothing to read"


def test_training_on_an_empty_export_is_one_line(tmp_path: Path) -> None:
    export = tmp_path / "leads.csv"
    export.write_text("id,created,won,plan\n")
    config = tmp_path / "leadscore.yaml"
    config.write_text(json.dumps({"data": _timed_export(export)}))

    result = CliRunner().invoke(cli, ["train", "--config", str(config), "--no-mlflow"])

    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: data.leads.source ({export}): no rows, only a header: nothing to read"], result.output


def test_an_empty_event_table_of_a_data_section_is_read_as_no_events(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a", "b"], "created": ["2024-01-01", "2024-01-02"], "won": ["", "2024-02-01"], "plan": ["x", "y"]}).to_csv(
        tmp_path / "leads.csv", index=False
    )
    (tmp_path / "events.csv").write_text("contact,at,event\n")
    raw = _timed_export(tmp_path / "leads.csv") | {
        "interactions": [{"source": str(tmp_path / "events.csv"), "lead_id": "contact", "occurred_at": "at", "type": "event"}]
    }

    dataset = _load(raw).dataset

    assert dataset.leads["lead_id"].tolist() == ["a", "b"] and dataset.interactions.empty


def test_duplicate_ids_behind_a_bad_date_in_an_export_are_all_set_aside(tmp_path: Path) -> None:
    export = pd.DataFrame(
        {"id": ["a", "a", "b", "c", "c"], "created": ["2024-01-01", "not a date", "2024-01-02", "2024-01-03", ""], "won": [""] * 5, "plan": list("xyxyx")}
    )
    export.to_csv(tmp_path / "leads.csv", index=False)

    dataset = _load(_timed_export(tmp_path / "leads.csv")).dataset

    assert dataset.leads["lead_id"].tolist() == ["b"]
    assert dataset.quarantine.groupby("rule")["lead_id"].apply(list).to_dict() == {"share a lead_id with another row": ["a", "a", "c", "c"]}
    assert len(dataset.leads) + len(dataset.quarantine) == len(export)


@pytest.mark.parametrize(("since", "says"), [("last tuesday", "--since must look like"), ("0001-01-01T00:00:00+14:00", "is out of range")])
def test_evaluate_since_that_is_not_a_date_is_one_line(trained_bundle: Path, simulated_dir: Path, since: str, says: str) -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--bundle", str(trained_bundle), "--data", str(simulated_dir), "--since", since])

    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.output


def test_training_on_data_whose_every_lead_is_set_aside_says_so(tmp_path: Path) -> None:
    sample = pd.read_csv(Path(__file__).parents[1] / "data" / "sample" / "leads.csv.gz", nrows=3, dtype=str)
    sample.assign(created_at="not a date").to_csv(tmp_path / "leads.csv", index=False)
    (tmp_path / "interactions.csv").write_text("lead_id,type,occurred_at\n")

    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--no-mlflow", "--quarantine-out", str(tmp_path / "q.csv")])

    assert result.exit_code == 2, result.output
    assert f"error: no valid lead: every lead of the data was set aside (3 rows in {tmp_path / 'q.csv'}" in result.output
    assert "point grid" not in result.output and "leakage guard" not in result.output
