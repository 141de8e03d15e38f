"""The real server: `bentoml serve` in a subprocess on a free port, called over HTTP."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.bench_model import example_lead
from benchmarks.local_server import start_server, stop
from model.bundle import read_meta
from model.scorelog import lead_pseudonym

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 90.0
AS_OF = "2024-05-01T00:00:00Z"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    bundle: Path
    lead_key: bytes

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("server")
    log = workdir / "server.log"
    env = {
        **os.environ,
        **service_env,
        "LEADSCORE_BUNDLE": str(trained_bundle),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",  # so the log test reads what the server has written
    }
    process, url = start_server(env, log, ready_timeout_s=READY_TIMEOUT_S, fail=pytest.fail)
    try:
        yield Server(url=url, log=log, bundle=trained_bundle, lead_key=service_env["LEADSCORE_LEAD_KEY"].encode())
    finally:
        stop(process)


@pytest.fixture(scope="module")
def http(server: Server, service_keys) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, headers=service_keys.header("score")) as client:
        yield client


CREATED_AT = "2024-03-01T10:00:00Z"
INTERACTIONS = (
    {"type": "pricing_page_view", "occurred_at": "2024-04-20T09:00:00Z", "channel": "web"},
    {"type": "demo_request", "occurred_at": "2024-04-25T16:00:00Z"},
)


def a_lead(lead_id: str, **changes: Any) -> dict[str, Any]:
    """A lead as a CRM sends it, with every attribute of the simulator's feature spec."""
    return example_lead(lead_id, CREATED_AT, INTERACTIONS, **changes)


def test_score(http: httpx.Client, server: Server) -> None:
    response = http.post("/score", json={"lead": a_lead("L-1"), "as_of": AS_OF})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lead_id"] == "L-1"
    assert body["model_version"] == read_meta(server.bundle)["model_version"]
    assert 0.0 <= body["probability"] <= 1.0
    assert body["tier"] in ("hot", "warm", "cold")
    assert set(body["reasons"]) == {"up", "down"}


def test_score_batch(http: httpx.Client) -> None:
    leads = [a_lead(f"L-{i}") for i in range(3)]

    response = http.post("/score_batch", json={"leads": leads, "as_of": AS_OF, "explain": True})

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["lead_id"] for r in results] == ["L-0", "L-1", "L-2"]
    assert all(r["reasons"] is not None for r in results)


def test_model(http: httpx.Client, server: Server) -> None:
    response = http.get("/model")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == read_meta(server.bundle)["model_version"]
    assert {"model", "point_grid", "logistic_regression"} <= set(body["metrics"])


@pytest.mark.parametrize(
    ("path", "content", "content_type", "status", "loc"),
    [
        pytest.param("/score", b'{"lead": ', "application/json", 400, [], id="malformed-json"),
        pytest.param("/score", b'{"lead": {"created_at": "2024-03-01"}}', "application/json", 400, ["lead", "lead_id"], id="missing-lead-id"),
        pytest.param(
            "/score", b'{"lead": {"lead_id": "L-1", "created_at": "2024-03-01", "attributes": {"employee_count": NaN}}}',
            "application/json", 400, ["lead", "attributes"], id="nan-attribute",
        ),
        pytest.param(
            "/score", b'{"lead": {"lead_id": "L-1", "created_at": "2024-03-01"}, "as_of": "2024-01-01"}',
            "application/json", 400, ["lead", "created_at"], id="as-of-before-created-at",
        ),
        pytest.param(
            "/score_batch",
            b'{"leads": [{"lead_id": "a", "created_at": "2024-03-01"}, {"lead_id": "b", "created_at": "2024-03-01"},'
            b' {"lead_id": "c", "created_at": "the day before"}]}',
            "application/json", 400, ["leads", 2, "created_at"], id="batch-bad-lead-at-2",
        ),
        pytest.param(
            "/score_batch", b'{"leads": [' + b",".join([b'{"lead_id": "a", "created_at": "2024-03-01"}'] * 1001) + b"]}",
            "application/json", 400, ["leads"], id="batch-too-many",
        ),
        pytest.param("/score_batch", b'{"leads": []}', "application/json", 400, ["leads"], id="batch-empty"),
        pytest.param("/score", b"garbage", "multipart/form-data", 415, [], id="multipart-without-boundary"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_field(
    http: httpx.Client, path: str, content: bytes, content_type: str, status: int, loc: list[str | int]
) -> None:
    response = http.post(path, content=content, headers={"content-type": content_type})

    assert response.status_code == status, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]], response.text


def test_server_log_has_lead_hashes_and_no_emails(http: httpx.Client, server: Server) -> None:
    ids = ["jane.doe@acme-robotics.com", "bob.martin@example.org"]
    leads = [a_lead(ids[0]), a_lead(ids[1], attributes={"email": "bob.martin@example.org", "industry": "retail"})]
    assert http.post("/score", json={"lead": leads[0], "as_of": AS_OF}).status_code == 200
    assert http.post("/score_batch", json={"leads": leads, "as_of": AS_OF}).status_code == 200
    # Rejected requests are logged by BentoML with a traceback: it must not carry the input.
    rejected = b'{"lead": {"lead_id": "x@y.io", "created_at": "2024-03-01", "attributes": {"email": "x@y.io", "n": NaN}}}'
    assert http.post("/score", content=rejected, headers={"content-type": "application/json"}).status_code == 400
    unparsable = {"lead": {**leads[0], "created_at": "jane.doe@acme-robotics.com"}}
    assert http.post("/score", json=unparsable).status_code == 400

    deadline = time.monotonic() + 10
    refs = [lead_pseudonym(i, server.lead_key) for i in ids]
    while not all(ref in server.log_text() for ref in refs) and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = server.log_text()
    assert all(ref in logged for ref in refs), logged[-3000:]
    assert EMAIL.findall(logged) == []
