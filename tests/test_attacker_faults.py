"""Faults found by trying the service and the CLI as an attacker would (issue 14), each pinned.

Timestamps out of Python's range, numbers for timestamps, personal data in a category field,
score logs and quarantine files readable by all, `forget` and `rollback` on stores that are
not there or damaged, empty training files, duplicate ids hidden behind a bad date, a
registry outage the service must recover from, and the server log of client errors.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.bench_model import example_lead
from benchmarks.local_server import start_server, stop
from features.contract import validate
from features.spec import FeatureSpec
from leadscore.cli import app as cli
from model.registry import RegistryConfig, RegistryError, champion_version
from serving.service import BundleRejected, LeadScoring

AS_OF = "2024-05-01T00:00:00Z"
CREATED_AT = "2024-03-01T10:00:00Z"
INTERACTIONS = ({"type": "pricing_page_view", "occurred_at": "2024-04-20T09:00:00Z"},)
PERSONAL = "jane.doe@example.com"
OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]




def a_lead(lead_id: str = "L-1", **changes: Any) -> dict[str, Any]:
    return example_lead(lead_id, CREATED_AT, INTERACTIONS, **changes)


@pytest.fixture(scope="module")
def score_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attacks") / "logs" / "scores.db"


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


# -- 3: timestamps outside Python's range ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("when", OUT_OF_RANGE)
async def test_a_timestamp_out_of_range_in_utc_is_a_400_naming_the_field(client: httpx.AsyncClient, when: str) -> None:
    created = await client.post("/score", json={"lead": a_lead(created_at=when)})
    assert "out of range" in refused_at(created, ["lead", "created_at"])

    occurred = a_lead(interactions=[{"type": "page_view", "occurred_at": when}])
    batch = await client.post("/score_batch", json={"leads": [a_lead("L-0"), occurred]})
    assert "out of range" in refused_at(batch, ["leads", 1, "interactions", 0, "occurred_at"])

    as_of = await client.post("/score", json={"lead": a_lead(), "as_of": when})
    assert "out of range" in refused_at(as_of, ["as_of"])


# -- 6: what is accepted as a number and as a timestamp -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("text", ["1717232400", " 1717232400.5 ", "2024"])
async def test_numeric_text_for_a_timestamp_is_refused(client: httpx.AsyncClient, text: str) -> None:
    response = await client.post("/score", json={"lead": a_lead(created_at=text), "as_of": AS_OF})

    assert "not a number written as text" in refused_at(response, ["lead", "created_at"])


@pytest.mark.anyio
async def test_numeric_text_for_a_numeric_attribute_is_read_as_the_number(client: httpx.AsyncClient) -> None:
    lead = a_lead()
    as_text = a_lead(attributes={**lead["attributes"], "employee_count": "250"})
    as_number = a_lead(attributes={**lead["attributes"], "employee_count": 250})

    text = await client.post("/score", json={"lead": as_text, "as_of": AS_OF})
    number = await client.post("/score", json={"lead": as_number, "as_of": AS_OF})

    assert text.status_code == number.status_code == 200, text.text
    assert text.json()["probability"] == number.json()["probability"]


# -- 5: personal data in a category field, score log modes, forget ------------------------------


@pytest.mark.anyio
async def test_the_score_log_keeps_no_category_value_unseen_in_training(
    client: httpx.AsyncClient, score_log: Path
) -> None:
    lead = a_lead("L-pii")
    lead["attributes"] = {**lead["attributes"], "job_role": PERSONAL}

    response = await client.post("/score", json={"lead": lead, "as_of": AS_OF})

    assert response.status_code == 200, response.text
    assert any("job_role" in w and "unseen" in w for w in response.json()["warnings"])
    with sqlite3.connect(score_log) as db:
        rows = [json.loads(features) for (features,) in db.execute("SELECT features FROM score_log")]
    assert rows, "nothing was logged"
    assert PERSONAL not in score_log.read_bytes().decode("latin-1")
    assert rows[-1]["job_role"] == "(unseen)"
    assert stat.S_IMODE(score_log.stat().st_mode) == 0o600


def test_forget_on_a_database_that_is_not_there_refuses_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADSCORE_LEAD_KEY", "test-lead-key-0123456789")
    missing = tmp_path / "nonexistent" / "x.db"

    result = CliRunner().invoke(cli, ["forget", PERSONAL, "--log", f"sqlite:///{missing}"])

    assert result.exit_code == 2, result.output
    assert "no such database" in result.output
    assert "deleted" not in result.output
    assert not missing.parent.exists()


def test_the_quarantine_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    from training.workflow import report_validation

    spec = FeatureSpec(categorical=[], numeric=[], email_column=None, interaction_types=[])
    leads = pd.DataFrame({"lead_id": ["a@x.com", "b@x.com"], "created_at": ["2024-01-01", "not a date"]})
    events = pd.DataFrame({"lead_id": [], "occurred_at": [], "type": []})
    dataset = validate(leads, events, spec)
    target = tmp_path / "quarantine.csv"
    target.write_text("")
    target.chmod(0o644)  # a file from an earlier run keeps no looser mode

    report_validation(dataset, _Silent(), target)

    assert "b@x.com" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


class _Silent:
    def say(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


# -- 7: training on empty files; duplicates behind a bad date -----------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "no header and no rows"),
        # Every column of the default feature spec: before, training went on to fail on the grid.
        (
            "lead_id,created_at,converted_at,email,industry,company_size,employee_count,country,job_role,"
            "seniority,source,marketing_consent\n",
            "no rows, only a header",
        ),
    ],
)
def test_training_on_an_empty_leads_file_is_one_line_naming_it(tmp_path: Path, content: str, says: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "leads.csv").write_text(content)

    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--no-mlflow"])

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {data / 'leads.csv'}: {says}: nothing to read"], result.output


def test_both_copies_of_a_duplicate_id_are_quarantined_when_one_has_a_bad_created_at() -> None:
    spec = FeatureSpec(categorical=[], numeric=[], email_column=None, interaction_types=[])
    leads = pd.DataFrame(
        {"lead_id": ["L-1", "L-1", "L-2"], "created_at": ["2024-01-01", "not a date", "2024-01-02"]}
    )
    events = pd.DataFrame({"lead_id": [], "occurred_at": [], "type": []})

    dataset = validate(leads, events, spec)

    assert dataset.leads["lead_id"].tolist() == ["L-2"]
    rules = dataset.quarantine.groupby("rule")["lead_id"].apply(list).to_dict()
    assert rules == {"share a lead_id with another row": ["L-1", "L-1"]}
    assert len(dataset.leads) + len(dataset.quarantine) == len(leads)


# -- 4: registry errors are errors, and the service recovers from them ------------------------------


def _write_config(tmp_path: Path, database: Path) -> Path:
    config = tmp_path / "leadscore.yaml"
    config.write_text(f"registry:\n  tracking_uri: sqlite:///{database}\n")
    return config


def test_rollback_on_a_missing_registry_says_so_and_creates_nothing(tmp_path: Path) -> None:
    database = tmp_path / "store" / "mlflow.db"

    result = CliRunner().invoke(cli, ["rollback", "--config", str(_write_config(tmp_path, database))])

    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [
        f"error: registry sqlite:///{database}: no such database ({database} does not exist)"
    ]
    assert not database.parent.exists()


def test_rollback_on_a_damaged_registry_is_one_line(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    database.write_bytes(b"not a database " * 400)

    result = CliRunner().invoke(cli, ["rollback", "--config", str(_write_config(tmp_path, database))])

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip() and " INFO mlflow." not in line]
    assert len(lines) == 1 and lines[0].startswith("error: registry") and "not a database" in lines[0], result.output


def test_a_damaged_registry_is_an_error_not_no_champion(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    database.write_bytes(b"not a database " * 400)

    with pytest.raises(RegistryError, match="not a database"):
        champion_version(RegistryConfig(tracking_uri=f"sqlite:///{database}"))


def _register_in_a_child(uri: str, bundle: Path) -> None:
    # In another process: MLflow keeps one engine per URI per process, and this test is about
    # the one the service opens.
    code = (
        "import sys; from mlflow import MlflowClient; c = MlflowClient(sys.argv[1]); "
        "c.create_registered_model('leadscore'); c.create_model_version('leadscore', source=sys.argv[2]); "
        "c.set_registered_model_alias('leadscore', 'champion', '1')"
    )
    subprocess.run([sys.executable, "-c", code, uri, str(bundle)], check=True, capture_output=True, timeout=300)


def test_the_service_recovers_when_its_registry_is_restored(
    trained_bundle: Path, service_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    service_pool_env_restored: None,
) -> None:
    database = tmp_path / "registry" / "mlflow.db"
    database.parent.mkdir()
    uri = f"sqlite:///{database}"
    _register_in_a_child(uri, trained_bundle)
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LEADSCORE_BUNDLE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    service = LeadScoring()
    try:
        assert service.served.registry_version == "1"
        saved = tmp_path / "saved.db"
        shutil.copy(database, saved)
        with database.open("r+b") as damaged:  # damaged in place
            damaged.write(b"not a database " * 400)
        with pytest.raises(BundleRejected, match="registry .* cannot read .*not a database"):
            service.reload()
        # Restored the usual way: a copy renamed over the damaged file.
        shutil.copy(saved, tmp_path / "restoring.db")
        os.replace(tmp_path / "restoring.db", database)
        assert service.reload().source == "registry leadscore version 1"
    finally:
        service.stop_following()


# -- 6 and 3 over HTTP: a client error is one line of the server log --------------------------------


def test_client_errors_are_one_log_line_each_over_http(
    trained_bundle: Path, service_env: dict[str, str], service_keys, tmp_path: Path
) -> None:
    env = {**os.environ, **service_env, "LEADSCORE_BUNDLE": str(trained_bundle), "BENTOML_HOME": str(tmp_path / "bentoml")}
    log = tmp_path / "server.log"
    bad_bodies: list[tuple[str, dict[str, Any]]] = [
        ("/score", {"lead": a_lead(created_at=OUT_OF_RANGE[0])}),
        ("/score_batch", {"leads": [a_lead(interactions=[{"type": "x", "occurred_at": OUT_OF_RANGE[1]}])]}),
        ("/score", {"lead": a_lead(created_at="1717232400")}),
        ("/score", {"lead": a_lead(attributes={"employee_count": "abc"})}),
        ("/score", {"lead": a_lead(), "as_of": "2024-01-01T00:00:00Z"}),  # before created_at
        ("/score", {"lead": {"lead_id": "L-1"}}),
    ]
    process, url = start_server(env, log, ready_timeout_s=180, fail=pytest.fail)
    try:
        with httpx.Client(base_url=url, headers=service_keys.header(), timeout=30) as http:
            for path, body in bad_bodies:
                response = http.post(path, json=body)
                assert response.status_code == 400, (path, response.text)
        time.sleep(1)  # the access log is written after the response
    finally:
        stop(process)
    text = log.read_text()
    assert "Traceback" not in text and "[ERROR]" not in text, text[-3000:]
    answered = [line for line in text.splitlines() if "status=400" in line]
    assert len(answered) == len(bad_bodies), text[-3000:]
