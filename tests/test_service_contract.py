"""The real server against its own OpenAPI document: schemathesis, keys over HTTP, a clean log.

`bentoml serve` runs in a subprocess on a free port of 127.0.0.1 with keys of both roles.
schemathesis reads `/docs.json` (FastAPI's document, `serving.api`) and sends generated requests,
valid and invalid, to every operation with the admin key, and runs all its checks: no answer may
be a 5xx; every answer must match the status, content type and body schema the document gives
it; a request the schema forbids must be refused (ST201) and one it allows must be accepted
(ST202); an operation that declares the key must refuse a request without it. Cases per
operation and kind: `SCHEMATHESIS_EXAMPLES` (15 here, ~200 cases; `make bench-service` runs
more). Cases, statuses and failures by check code go to tests/artifacts/schemathesis.json.

Two rules no JSON Schema keyword can state are applied to the valid cases before they are sent
(`within_model_rules`): a timestamp is not in the future (the document says so in `x-not-after`
beside `formatMinimum`), `as_of` is not before a lead's `created_at`, and an attribute the served
model reads as a number is not text (which attributes those are is the bundle's). One refusal is the
server's state, not the request's: `POST /admin/reload` of a folder that holds no bundle answers
422, allowed for that operation as schemathesis allows 404 for an unknown id.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure, FailureGroup

from benchmarks.local_server import start_server, stop
from model.bundle import ScoringModel

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 90.0
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "15"))
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
CASES: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()
FAILURES: Counter[str] = Counter()  # "ST201 POST /score" -> count
EXAMPLES_OF_FAILURES: dict[str, str] = {}
# A refusal that is the server's state, not the request's (see the module's docstring).
CONFIG = {
    "operations": [
        {"include-name": "POST /admin/reload",
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "409", "422"]}}},
    ]
}  # fmt: skip


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


@pytest.fixture(scope="module", autouse=True)
def _schemathesis_summary(artifacts_dir: Path) -> Iterator[None]:
    """After this module's tests: the counts of this process's cases in tests/artifacts/schemathesis.json.

    Each test asserts its own operation; this only records (`make bench-service` reads it).
    """
    yield
    if not CASES:
        return
    (artifacts_dir / "schemathesis.json").write_text(
        json.dumps({"examples_per_operation": EXAMPLES, "cases": dict(CASES), "total": sum(CASES.values()),
                    "statuses": dict(STATUSES), "failures": dict(FAILURES),
                    "examples_of_failures": EXAMPLES_OF_FAILURES}, indent=2)  # fmt: skip
    )
    print(f"schemathesis: {sum(CASES.values())} cases, statuses {dict(STATUSES)}, failures {dict(FAILURES)}")


@pytest.fixture(scope="module")
def api_schema(contract_server: tuple[str, Path]):
    url, _log = contract_server
    return schemathesis.openapi.from_url(f"{url}/docs.json", config=SchemathesisConfig.from_dict(CONFIG))


# Timestamps schemathesis draws span years 0001-9999; these are moved into 1971-2020, keeping the
# rest of the text (a 29 February to a leap year).
def _in_range(text: str) -> str:
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    if datetime(1971, 1, 1, tzinfo=UTC) <= instant <= datetime.now(UTC) - timedelta(days=2):
        return text
    year = 1972 + 4 * (instant.year % 12) if text[5:10] == "02-29" else 1971 + instant.year % 50
    return f"{year:04d}{text[4:]}"


def _instant(text: str) -> datetime:
    instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def within_model_rules(body: Any, numeric: set[str]) -> Any:
    """A valid request body with its `created_at` and `as_of` in range, `as_of` not before a `created_at`,
    and no text or boolean for an attribute the served model reads as a number (`numeric`)."""
    if not isinstance(body, dict):
        return body
    leads = [body["lead"]] if isinstance(body.get("lead"), dict) else [x for x in body.get("leads") or [] if isinstance(x, dict)]
    for lead in leads:
        if isinstance(lead.get("created_at"), str):
            lead["created_at"] = _in_range(lead["created_at"])
        attributes = lead.get("attributes")
        if isinstance(attributes, dict):
            for name in numeric & set(attributes):
                if isinstance(attributes[name], (str, bool)):
                    attributes[name] = None
    if isinstance(body.get("as_of"), str):
        body["as_of"] = _in_range(body["as_of"])
        created = [lead["created_at"] for lead in leads if isinstance(lead.get("created_at"), str)]
        latest = max(created, key=_instant, default=None)
        if latest is not None and _instant(body["as_of"]) < _instant(latest):
            body["as_of"] = latest
    return body


def query_within_rules(case: Any) -> Any:
    """A case whose query `as_of` is in range, as `within_model_rules` puts a body's."""
    if isinstance(case.query, dict) and isinstance(case.query.get("as_of"), str):
        case.query["as_of"] = _in_range(case.query["as_of"])
    return case


OPERATIONS = [
    ("POST", "/score"), ("POST", "/score_batch"), ("GET", "/model"), ("GET", "/report"), ("GET", "/importance"),
    ("POST", "/admin/reload"), ("POST", "/events"), ("GET", "/leads/{lead_id}/score"), ("GET", "/accounts/{account_id}"), ("GET", "/livez"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
]  # fmt: skip


# Documented, not fuzzed here: their answers need a HubSpot signature or a Salesforce org id and
# token that generated cases cannot carry (every case would be refused alike); tests/test_crm.py
# sends them documented and malformed payloads, signed and not, in process and over HTTP.
CRM_OPERATIONS = [("POST", "/crm/hubspot/action"), ("POST", "/crm/salesforce/outbound")]


def test_the_document_lists_these_operations(api_schema) -> None:
    documented = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert documented == set(OPERATIONS) | set(CRM_OPERATIONS)


# schemathesis' pytest plugin (`from_fixture`) does not run under pytest 9: the cases are drawn
# with its Hypothesis strategies instead, one test per operation and kind of data.
@pytest.mark.parametrize(
    ("method", "path", "mode"),
    # Invalid data needs something to be invalid: only the operations with a body have it.
    [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [(m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if m == "POST"],
)
def test_every_answer_matches_the_document(api_schema, service_keys, trained_bundle: Path, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE:
        numeric = set(ScoringModel.load(trained_bundle).spec.numeric)
        strategy = strategy.map(lambda case: setattr(case, "body", within_model_rules(case.body, numeric)) or case)
        strategy = strategy.map(query_within_rules)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def every_case(case) -> None:
        headers = service_keys.header("admin")
        response = case.call(headers=headers, timeout=60)
        CASES[f"{method} {path}"] += 1
        STATUSES[str(response.status_code)] += 1
        try:
            case.validate_response(response, headers=headers)
        except (Failure, FailureGroup) as exc:  # counted, not raised: every case runs, none is shrunk
            for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                key = f"{failure.code} {method} {path}"
                FAILURES[key] += 1
                EXAMPLES_OF_FAILURES.setdefault(
                    key, f"{failure.title}: {failure.message[:300]} | body {case.body!r:.300} | answer {response.text[:300]}"
                )

    operation_key = f"{method} {path}"
    before = dict(STATUSES)
    every_case()
    assert CASES[operation_key] > 0, f"no case was drawn for {operation_key}"
    server_errors = {s: n - before.get(s, 0) for s, n in STATUSES.items() if s.startswith("5") and n > before.get(s, 0)}
    assert not server_errors, server_errors
    mine = {key: example for key, example in EXAMPLES_OF_FAILURES.items() if key.endswith(f" {operation_key}")}
    assert not mine, mine


def test_the_document_is_served_without_a_key(contract_server: tuple[str, Path]) -> None:
    url, _log = contract_server
    document = httpx.get(f"{url}/docs.json", timeout=10).json()

    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "An API key (LEADSCORE_API_KEYS).",
    }  # fmt: skip
    assert document["paths"]["/score"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in document["paths"]["/livez"]["get"]


def test_over_http_a_scoring_request_without_a_key_is_refused(contract_server: tuple[str, Path], service_keys) -> None:
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


@pytest.mark.parametrize("path", ["/nope", "/leads/a%2Fb/score", "/leads/a/b/score", "/leads//score", "/leads/./score", "/leads/%0A/score"])
def test_over_http_a_path_no_route_serves_is_a_json_404(contract_server: tuple[str, Path], service_keys, path: str) -> None:
    url, _log = contract_server

    response = httpx.get(f"{url}{path}", headers=service_keys.header("admin"), timeout=10)

    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"][0]["type"] == "unknown_path"
    assert response.json()["detail"][0]["loc"] == ["path"]


def test_over_http_a_body_over_5_mib_is_413(contract_server: tuple[str, Path], service_keys) -> None:
    url, _log = contract_server
    body = b'{"leads": [' + b",".join([b'{"lead_id": "a", "created_at": "2024-03-01"}'] * 130_000) + b"]}"
    assert len(body) > 5 * 1024 * 1024

    response = httpx.post(
        f"{url}/score_batch", content=body, headers={**service_keys.header("score"), "content-type": "application/json"}, timeout=60
    )

    assert response.status_code == 413, response.text
    assert "larger than 5,242,880 bytes" in response.json()["detail"][0]["msg"]


def test_the_server_log_of_all_of_it_has_no_email(contract_server: tuple[str, Path], service_keys) -> None:
    url, log = contract_server
    lead = {"lead_id": "jane.doe@acme-robotics.com", "created_at": "2024-03-01",
            "attributes": {"email": "jane.doe@acme-robotics.com", "industry": "dr.who@tardis.example.org"}}  # fmt: skip
    for body in ({"lead": lead, "as_of": "2024-04-01"}, {"lead": {**lead, "created_at": "jane@x.io"}}):
        httpx.post(f"{url}/score", json=body, headers=service_keys.header("score"), timeout=30)
    time.sleep(1)

    assert EMAIL.findall(log.read_text(errors="replace")) == []
