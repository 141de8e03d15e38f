"""The real server against its own OpenAPI document: schemathesis, keys over HTTP, a clean log.

`bentoml serve` runs in a subprocess on a free port of 127.0.0.1 with keys of both roles.
schemathesis reads `/docs.json` (`serving.openapi`) and sends generated requests, valid and
invalid, to every operation with the admin key: no answer may be a 5xx, and every answer must
match the status, content type and body schema the document gives it, and an operation that
declares the key must refuse a request without it (schemathesis' own checks). Cases per
operation: `SCHEMATHESIS_EXAMPLES` (30 here; `make bench-service` runs more). The number of
cases sent is written to tests/artifacts/schemathesis.json.

Not checked: `positive_data_acceptance` (a request the schema allows must get a 2xx). Some
rules are the model's and time's, not JSON Schema's: `as_of` before `created_at`, a timestamp
in the future, a number expected for an attribute of this model. Such a request gets a 400
naming the field, whose body is checked against the document like any other.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from benchmarks.local_server import start_server, stop

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 90.0
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "30"))
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
CASES: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def contract_server(
    trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]
) -> Iterator[tuple[str, Path]]:
    workdir = tmp_path_factory.mktemp("contract")
    log = workdir / "server.log"
    env = {
        **os.environ,
        **service_env,
        "LEADSCORE_BUNDLE": str(trained_bundle),
        "LEADSCORE_SCORE_LOG": str(workdir / "scores.jsonl"),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "PYTHONUNBUFFERED": "1",
    }
    process, url = start_server(env, log, ready_timeout_s=READY_TIMEOUT_S, append_log=True, fail=pytest.fail)
    try:
        yield url, log
    finally:
        stop(process)


@pytest.fixture(scope="module")
def api_schema(contract_server: tuple[str, Path]):  # noqa: ANN201
    url, _log = contract_server
    return schemathesis.openapi.from_url(f"{url}/docs.json")


OPERATIONS = [
    ("POST", "/score"), ("POST", "/score_batch"), ("GET", "/model"), ("GET", "/report"), ("GET", "/importance"),
    ("POST", "/admin/reload"), ("GET", "/livez"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
]  # fmt: skip


def test_the_document_lists_these_operations(api_schema) -> None:  # noqa: ANN001
    documented = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert documented == set(OPERATIONS)


# schemathesis' pytest plugin (`from_fixture`) does not run under pytest 9: the cases are drawn
# with its Hypothesis strategies instead, one test per operation and kind of data.
@pytest.mark.parametrize(
    ("method", "path", "mode"),
    # Invalid data needs something to be invalid: only the operations with a body have it.
    [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [(m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"],
)
def test_every_answer_matches_the_document(api_schema, service_keys, method: str, path: str, mode: GenerationMode) -> None:  # noqa: ANN001
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def every_case(case) -> None:  # noqa: ANN001
        response = case.call_and_validate(
            headers=service_keys.header("admin"), excluded_checks=[positive_data_acceptance], timeout=60
        )
        CASES[f"{method} {path}"] += 1
        STATUSES[str(response.status_code)] += 1

    every_case()


def test_schemathesis_ran_every_operation(artifacts_dir: Path) -> None:
    operations = {f"{method} {path}" for method, path in OPERATIONS}
    if not CASES:
        pytest.skip("run with the schemathesis test (it fills the counts)")
    (artifacts_dir / "schemathesis.json").write_text(
        json.dumps({"examples_per_operation": EXAMPLES, "cases": dict(CASES), "total": sum(CASES.values()),
                    "statuses": dict(STATUSES)}, indent=2)  # fmt: skip
    )
    print(f"schemathesis: {sum(CASES.values())} cases, statuses {dict(STATUSES)}")
    assert operations <= set(CASES), CASES
    assert not any(status.startswith("5") for status in STATUSES), STATUSES


def test_the_document_is_served_without_a_key(contract_server: tuple[str, Path]) -> None:
    url, _log = contract_server
    document = httpx.get(f"{url}/docs.json", timeout=10).json()

    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "An API key (LEADSCORE_API_KEYS).",
    }  # fmt: skip
    assert document["paths"]["/score"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in document["paths"]["/livez"]["get"]


def test_over_http_a_scoring_request_without_a_key_is_refused(contract_server: tuple[str, Path], service_keys) -> None:  # noqa: ANN001
    url, _log = contract_server
    body = {"lead": {"lead_id": "L-1", "created_at": "2024-03-01"}, "as_of": "2024-04-01"}

    without = httpx.post(f"{url}/score", json=body, timeout=30)
    wrong = httpx.post(f"{url}/score", json=body, headers={"Authorization": "Bearer wrong-key-0123456789"}, timeout=30)
    right = httpx.post(f"{url}/score", json=body, headers=service_keys.header("score"), timeout=30)

    assert without.status_code == 401 and without.json()["detail"][0]["type"] == "missing_api_key"
    assert wrong.status_code == 401 and wrong.json()["detail"][0]["type"] == "invalid_api_key"
    assert right.status_code == 200, right.text
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path


def test_over_http_a_body_over_5_mib_is_413(contract_server: tuple[str, Path], service_keys) -> None:  # noqa: ANN001
    url, _log = contract_server
    body = b'{"leads": [' + b",".join([b'{"lead_id": "a", "created_at": "2024-03-01"}'] * 130_000) + b"]}"
    assert len(body) > 5 * 1024 * 1024

    response = httpx.post(
        f"{url}/score_batch", content=body, headers={**service_keys.header("score"), "content-type": "application/json"}, timeout=60
    )

    assert response.status_code == 413, response.text
    assert "larger than 5,242,880 bytes" in response.json()["detail"][0]["msg"]


def test_the_server_log_of_all_of_it_has_no_email(contract_server: tuple[str, Path], service_keys) -> None:  # noqa: ANN001
    url, log = contract_server
    lead = {"lead_id": "jane.doe@acme-robotics.com", "created_at": "2024-03-01",
            "attributes": {"email": "jane.doe@acme-robotics.com", "industry": "dr.who@tardis.example.org"}}  # fmt: skip
    for body in ({"lead": lead, "as_of": "2024-04-01"}, {"lead": {**lead, "created_at": "jane@x.io"}}):
        httpx.post(f"{url}/score", json=body, headers=service_keys.header("score"), timeout=30)
    time.sleep(1)

    assert EMAIL.findall(log.read_text(errors="replace")) == []
