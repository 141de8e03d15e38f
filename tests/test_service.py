"""The scoring service in-process: the class called directly, and its ASGI app over httpx.

The real server in a subprocess is tested in test_service_http.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tomllib
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import ValidationError

from benchmarks.bench_model import example_lead
from features.labels import ATTRIBUTE_TITLES, LANGUAGES
from model.bundle import read_meta
from model.scorelog import lead_pseudonym
from model.scoring import LeadIn
from serving.schemas import MAX_BATCH_LEADS, Language, ScoreBatchRequest, ScoreRequest
from serving.service import BundleLoadError, LeadScoring

AS_OF = "2024-05-01T00:00:00Z"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


CREATED_AT = "2024-03-01T10:00:00Z"
INTERACTIONS = (
    {"type": "page_view", "occurred_at": "2024-03-01T10:05:00Z", "channel": "web"},
    {"type": "pricing_page_view", "occurred_at": "2024-04-20T09:00:00Z", "channel": "web"},
    {"type": "webinar_attended", "occurred_at": "2024-04-25T16:00:00Z"},
)


def a_lead(lead_id: str = "L-1", **changes: Any) -> dict[str, Any]:
    """A lead as a CRM sends it, with every attribute of the simulator's feature spec."""
    return example_lead(lead_id, CREATED_AT, INTERACTIONS, **changes)


def with_attributes(**attributes: Any) -> dict[str, Any]:
    lead = a_lead()
    return a_lead(attributes={**lead["attributes"], **attributes})


@pytest.fixture
def bundle_env(trained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEADSCORE_BUNDLE", str(trained_bundle))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "true")
    return trained_bundle


@pytest.fixture
def service(bundle_env: Path) -> LeadScoring:
    return LeadScoring()


@pytest.fixture(scope="module")
async def client(trained_bundle: Path, start_service) -> AsyncIterator[httpx.AsyncClient]:
    """The session's ASGI app started on the trained bundle, called with a key of role score."""
    async with start_service(trained_bundle) as http:
        yield http


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert isinstance(body, dict) and "detail" in body, body
    return body["detail"]


def assert_rejected(response: httpx.Response, loc: list[str | int], message: str, status: int = 400) -> None:
    """A 4xx whose errors name `loc` with a message containing `message`."""
    assert response.status_code == status, response.text
    errors = errors_of(response)
    assert any(e["loc"] == loc and message in e["msg"] for e in errors), errors


# -- the class, called directly ----------------------------------------------------------------


def test_direct_score_of_a_good_lead(service: LeadScoring, bundle_env: Path) -> None:
    out = asyncio.run(service.score(ScoreRequest(lead=LeadIn(**a_lead()), as_of=AS_OF, top_k=2)))

    assert out.lead_id == "L-1"
    assert out.model_version == read_meta(bundle_env)["model_version"]
    assert 0.0 <= out.probability <= 1.0
    assert 0 <= out.score <= 100
    assert out.tier in ("hot", "warm", "cold")
    assert out.as_of.isoformat() == "2024-05-01T00:00:00+00:00"
    assert out.reasons is not None
    assert 1 <= len(out.reasons["up"]) + len(out.reasons["down"]) <= 4
    assert all(r.contribution > 0 for r in out.reasons["up"])
    assert all(r.contribution < 0 for r in out.reasons["down"])
    assert out.warnings == []


def test_direct_batch_names_every_lead_it_cannot_score(service: LeadScoring) -> None:
    leads = [LeadIn(**a_lead(f"L-{i}")) for i in range(4)]
    leads[2] = LeadIn(**a_lead("L-2", created_at="2024-06-01T00:00:00Z"))  # after as_of
    leads[3] = LeadIn(**with_attributes(employee_count="a few"))

    with pytest.raises(ValidationError) as caught:
        service.score_batch(ScoreBatchRequest(leads=leads, as_of=AS_OF))

    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [("leads", 2, "created_at"), ("leads", 3, "attributes", "employee_count")]
    assert "is after as_of" in errors[0]["msg"]


def test_direct_model_card_is_the_bundle_s(service: LeadScoring, bundle_env: Path) -> None:
    meta = read_meta(bundle_env)
    card = service.model_card()

    assert card.model_version == meta["model_version"]
    assert card.trained_at == meta["trained_at"]
    assert card.horizon_days == meta["horizon_days"]
    assert card.metrics == meta["metrics"]
    assert card.feature_names == meta["feature_names"]
    assert card.tiers.model_dump() == meta["tiers"]
    assert card.grid == meta["grid"]["name"]


def test_start_up_fails_naming_the_bundle_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-bundle"
    monkeypatch.setenv("LEADSCORE_BUNDLE", str(missing))

    with pytest.raises(BundleLoadError, match=re.escape(str(missing))):
        LeadScoring()


def test_start_up_fails_on_a_broken_bundle(trained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.txt").write_text((trained_bundle / "model.txt").read_text())
    (broken / "bundle.json").write_text("{not json")
    monkeypatch.setenv("LEADSCORE_BUNDLE", str(broken))

    with pytest.raises(BundleLoadError, match=re.escape(str(broken))):
        LeadScoring()


@pytest.mark.slow
def test_start_up_without_bundle_or_champion_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEADSCORE_BUNDLE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    with pytest.raises(BundleLoadError, match="LEADSCORE_BUNDLE.*champion"):
        LeadScoring()


def test_request_languages_are_the_labels_languages() -> None:
    assert get_args(Language) == LANGUAGES


def _pins(lock: Path) -> dict[str, str]:
    """name -> pinned version of a requirements lock (comments and `-r` lines skipped)."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _needed(requirements: list[str]) -> set[str]:
    """The distributions `requirements` need, transitively, by their installed metadata."""
    seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name, extras = canonicalize_name(requirement.name), set(requirement.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        for needed in map(Requirement, metadata.distribution(name).requires or []):
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in seen[name] | {""}):
                todo.append(needed)
    return set(seen)


def test_the_bento_installs_the_runtime_lock_which_pins_the_project_dependencies() -> None:
    root = Path(__file__).resolve().parents[1]
    bentofile = yaml.safe_load((root / "bentofile.yaml").read_text())
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    runtime, dev = _pins(root / "requirements.lock"), _pins(root / "requirements-dev.lock")

    assert bentofile["service"] == "serving.service:LeadScoring"
    assert bentofile["python"] == {"requirements_txt": "requirements.lock", "lock_packages": False}
    assert (root / "requirements-dev.lock").read_text().count("-r requirements.lock\n") == 1
    for dependency in map(Requirement, project["dependencies"]):
        name = canonicalize_name(dependency.name)
        assert name in runtime, f"{dependency} is not pinned in requirements.lock"
        assert dependency.specifier.contains(runtime[name]), f"requirements.lock pins {name}=={runtime[name]}, pyproject wants {dependency}"
    # Exactly what the project needs to run: the dependencies and theirs (installed metadata, markers
    # and extras evaluated), so the lock is complete and the development tools stay out of the Bento.
    assert set(runtime) == _needed(project["dependencies"]), set(runtime) ^ _needed(project["dependencies"])
    for dependency in map(Requirement, project["optional-dependencies"]["dev"]):
        assert canonicalize_name(dependency.name) in runtime | dev, f"{dependency} is pinned in neither lock"
    assert not set(runtime) & set(dev), set(runtime) & set(dev)


# -- the ASGI app --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_score_of_a_good_lead(client: httpx.AsyncClient, bundle_env: Path) -> None:
    response = await client.post("/score", json={"lead": a_lead(), "as_of": AS_OF})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "lead_id", "as_of", "probability", "score", "tier", "mql", "reasons", "point_grid", "warnings", "model_version",
        "fit", "engagement", "cell", "probability_by_horizon", "expected_days_to_convert",
        "trend", "score_7d_ago", "score_30d_ago",
    }  # fmt: skip
    assert body["model_version"] == read_meta(bundle_env)["model_version"]
    assert body["as_of"] == "2024-05-01T00:00:00Z"
    assert set(body["reasons"]) == {"up", "down"}
    assert len(body["reasons"]["up"]) <= 3 and len(body["reasons"]["down"]) <= 3
    assert set(body["point_grid"]) == {"points", "mql", "rules_fired"}


@pytest.mark.anyio
async def test_score_without_explanations(client: httpx.AsyncClient) -> None:
    explained = (await client.post("/score", json={"lead": a_lead(), "as_of": AS_OF})).json()
    plain = (await client.post("/score", json={"lead": a_lead(), "as_of": AS_OF, "explain": False})).json()

    assert plain["reasons"] is None
    assert plain["probability"] == pytest.approx(explained["probability"], abs=1e-6)


def _lead_body(lead: dict[str, Any], **options: Any) -> bytes:
    return json.dumps({"lead": lead, **options}).encode()


BAD_SCORE_REQUESTS = [
    # (body, loc, part of the message)
    pytest.param(b'{"lead": {"lead_id": "L-1",', [], "Invalid JSON", id="malformed-json"),
    pytest.param(b"", ["lead"], "Field required", id="empty-body"),
    pytest.param(b"[]", [], "Input should be an object", id="body-not-an-object"),
    pytest.param(_lead_body({k: v for k, v in a_lead().items() if k != "lead_id"}), ["lead", "lead_id"], "Field required", id="missing-lead-id"),
    pytest.param(_lead_body(a_lead(lead_id=42)), ["lead", "lead_id"], "valid string", id="lead-id-not-a-string"),
    pytest.param(_lead_body(a_lead(lead_id="")), ["lead", "lead_id"], "at least 1 character", id="empty-lead-id"),
    pytest.param(_lead_body(a_lead(created_at="last tuesday")), ["lead", "created_at"], "valid datetime", id="unparsable-created-at"),
    pytest.param(
        _lead_body(a_lead(interactions=[{"type": "page_view", "occurred_at": "2024-13-45T00:00:00Z"}])),
        ["lead", "interactions", 0, "occurred_at"], "valid datetime", id="unparsable-occurred-at",
    ),
    pytest.param(
        _lead_body(a_lead(interactions=[{"occurred_at": "2024-03-02T00:00:00Z"}])),
        ["lead", "interactions", 0, "type"], "Field required", id="interaction-without-type",
    ),
    pytest.param(
        _lead_body(a_lead(interactions="page_view")), ["lead", "interactions"], "valid array", id="interactions-not-a-list"
    ),
    pytest.param(
        _lead_body(a_lead(), as_of=AS_OF).replace(b'"employee_count": 120', b'"employee_count": NaN'),
        ["lead", "attributes"], "attributes.employee_count: must be a finite number", id="nan-attribute",
    ),
    pytest.param(
        _lead_body(a_lead(), as_of=AS_OF).replace(b'"employee_count": 120', b'"employee_count": -Infinity'),
        ["lead", "attributes"], "attributes.employee_count: must be a finite number", id="infinite-attribute",
    ),
    pytest.param(
        _lead_body(with_attributes(employee_count="Infinity"), as_of=AS_OF),
        ["lead", "attributes", "employee_count"], "must be a finite number", id="infinite-numeric-string",
    ),
    pytest.param(
        _lead_body(with_attributes(employee_count="about fifty"), as_of=AS_OF),
        ["lead", "attributes", "employee_count"], "got text that is not one", id="non-numeric-numeric-attribute",
    ),
    pytest.param(
        _lead_body(a_lead(), as_of=AS_OF).replace(b'"employee_count": 120', b'"employee_count": 1' + b"0" * 400),
        ["lead", "attributes", "employee_count"], "beyond float range", id="integer-beyond-float-range",
    ),
    pytest.param(
        _lead_body(with_attributes(email=["jane@acme.com"])),
        ["lead", "attributes", "email", "str"], "valid string", id="attribute-not-a-scalar",
    ),
    pytest.param(_lead_body(a_lead(score=99)), ["lead", "score"], "Extra inputs are not permitted", id="unknown-lead-field"),
    pytest.param(_lead_body(a_lead(), as_of="2024-02-01T00:00:00Z"), ["lead", "created_at"], "is after as_of", id="as-of-before-created-at"),
    pytest.param(_lead_body(a_lead(), as_of="soon"), ["as_of"], "valid datetime", id="unparsable-as-of"),
    pytest.param(_lead_body(a_lead(), top_k=0), ["top_k"], "greater than or equal to 1", id="top-k-zero"),
    pytest.param(_lead_body(a_lead(), top_k=11), ["top_k"], "less than or equal to 10", id="top-k-eleven"),
    pytest.param(_lead_body(a_lead(), language="de"), ["language"], "'en' or 'fr'", id="unknown-language"),
    pytest.param(_lead_body(a_lead(), explain="maybe"), ["explain"], "valid boolean", id="explain-not-a-boolean"),
    pytest.param(_lead_body(a_lead(), explian=False), ["explian"], "Extra inputs are not permitted", id="misspelt-option"),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "loc", "message"), BAD_SCORE_REQUESTS)
async def test_score_rejects_bad_input_naming_the_field(
    client: httpx.AsyncClient, body: bytes, loc: list[str | int], message: str
) -> None:
    response = await client.post("/score", content=body, headers={"content-type": "application/json"})

    assert_rejected(response, loc, message)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "application/x-www-form-urlencoded", "text/plain", "application/vnd.bentoml+pickle"]
)
async def test_score_answers_415_to_a_body_that_is_not_json(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post("/score", content=_lead_body(a_lead()), headers={"content-type": content_type})

    assert_rejected(response, [], "Content-Type: application/json", status=415)


@pytest.mark.anyio
async def test_unknown_interaction_type_is_scored_with_a_warning(client: httpx.AsyncClient) -> None:
    lead = a_lead()
    lead["interactions"].append({"type": "podcast_listen", "occurred_at": "2024-04-28T08:00:00Z"})

    response = await client.post("/score", json={"lead": lead, "as_of": AS_OF})

    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert any("podcast_listen" in w for w in body["warnings"]), body["warnings"]


@pytest.mark.anyio
async def test_unseen_category_value_is_scored_with_a_warning(client: httpx.AsyncClient) -> None:
    response = await client.post("/score", json={"lead": with_attributes(industry="asteroid_mining"), "as_of": AS_OF})

    assert response.status_code == 200, response.text
    warnings = response.json()["warnings"]
    assert any("attributes.industry" in w and "asteroid_mining" in w and "unseen" in w for w in warnings), warnings


@pytest.mark.anyio
async def test_french_labels(client: httpx.AsyncClient) -> None:
    request = {"lead": a_lead(), "as_of": AS_OF, "top_k": 10}
    english = (await client.post("/score", json=request)).json()["reasons"]
    french = (await client.post("/score", json={**request, "language": "fr"})).json()["reasons"]

    for way in ("up", "down"):
        assert [r["driver"] for r in french[way]] == [r["driver"] for r in english[way]]
        assert [r["contribution"] for r in french[way]] == [r["contribution"] for r in english[way]]
        assert all(fr["label"] != en["label"] for fr, en in zip(french[way], english[way], strict=True))
    attribute_reasons = [r for way in ("up", "down") for r in french[way] if r["driver"] in ATTRIBUTE_TITLES]
    assert attribute_reasons, "a lead with every attribute has attribute drivers among its reasons"
    for reason in attribute_reasons:
        assert reason["label"].startswith(ATTRIBUTE_TITLES[reason["driver"]]["fr"]), reason


@pytest.mark.anyio
async def test_score_batch_keeps_request_order_and_one_as_of(client: httpx.AsyncClient, bundle_env: Path) -> None:
    leads = [a_lead(f"L-{i}") for i in range(5)]
    leads[3]["interactions"] = []

    response = await client.post("/score_batch", json={"leads": leads})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == read_meta(bundle_env)["model_version"]
    assert [r["lead_id"] for r in body["results"]] == [f"L-{i}" for i in range(5)]
    assert len({r["as_of"] for r in body["results"]}) == 1
    assert all(r["reasons"] is None for r in body["results"])  # explain is off by default in batches


@pytest.mark.anyio
async def test_score_batch_agrees_with_score(client: httpx.AsyncClient) -> None:
    leads = [a_lead("L-0"), with_attributes(industry="retail", employee_count=8), a_lead("L-2", interactions=[])]

    batch = (await client.post("/score_batch", json={"leads": leads, "as_of": AS_OF, "explain": True})).json()

    for lead, result in zip(leads, batch["results"], strict=True):
        single = (await client.post("/score", json={"lead": lead, "as_of": AS_OF})).json()
        assert result == single


BAD_BATCHES = [
    pytest.param({"leads": []}, ["leads"], "at least 1 item", id="empty"),
    pytest.param({"leads": [a_lead(f"L-{i}") for i in range(MAX_BATCH_LEADS + 1)]}, ["leads"], "at most 1000 items", id="too-many"),
    pytest.param({"lead": a_lead()}, ["leads"], "Field required", id="single-lead-body"),
    pytest.param(
        {"leads": [a_lead("L-0"), a_lead("L-1"), a_lead("L-2", created_at="2024-02-30T00:00:00Z")]},
        ["leads", 2, "created_at"], "valid datetime", id="bad-created-at-at-2",
    ),
    pytest.param(
        {"leads": [a_lead("L-0"), a_lead("L-1"), {"created_at": "2024-03-01T10:00:00Z"}]},
        ["leads", 2, "lead_id"], "Field required", id="missing-lead-id-at-2",
    ),
    pytest.param(
        {"leads": [a_lead("L-0"), a_lead("L-1"), a_lead("L-2", created_at="2024-06-01T00:00:00Z")], "as_of": AS_OF},
        ["leads", 2, "created_at"], "is after as_of", id="as-of-before-created-at-at-2",
    ),
    pytest.param(
        {"leads": [a_lead("L-0"), a_lead("L-1"), with_attributes(employee_count="n/a")]},
        ["leads", 2, "attributes", "employee_count"], "must be a finite number", id="non-numeric-attribute-at-2",
    ),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "loc", "message"), BAD_BATCHES)
async def test_score_batch_rejects_a_bad_lead_naming_its_index(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[str | int], message: str
) -> None:
    response = await client.post("/score_batch", json=body)

    assert_rejected(response, loc, message)


@pytest.mark.anyio
async def test_model_endpoint(client: httpx.AsyncClient, bundle_env: Path) -> None:
    meta = read_meta(bundle_env)

    response = await client.get("/model")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == meta["model_version"]
    assert body["horizon_days"] == meta["horizon_days"]
    assert body["feature_names"] == meta["feature_names"]
    assert body["grid"] == meta["grid"]["name"]
    assert {"model", "point_grid", "logistic_regression"} <= set(body["metrics"])
    assert body["tiers"]["hot"] > body["tiers"]["warm"]


@pytest.mark.anyio
async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/livez")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.anyio
async def test_log_names_leads_by_hash_only(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, service_keys
) -> None:
    lead = a_lead("jane.doe@acme-robotics.com")
    caplog.set_level(logging.INFO)

    await client.post("/score", json={"lead": lead, "as_of": AS_OF})
    await client.post("/score_batch", json={"leads": [lead, a_lead("bob@example.org")]})
    nan_lead = json.dumps({"lead": with_attributes(employee_count=float("nan")) | {"lead_id": "x@y.io"}})
    await client.post("/score", content=nan_lead, headers={"content-type": "application/json"})
    await client.post("/score", json={"lead": {**lead, "attributes": {"email": ["jane@acme.com"]}}})

    logged = caplog.text
    key = service_keys.lead.encode()
    assert lead_pseudonym("jane.doe@acme-robotics.com", key) in logged
    assert lead_pseudonym("bob@example.org", key) in logged
    assert EMAIL.findall(logged) == []


@pytest.mark.anyio
async def test_report_and_importance_say_when_the_bundle_has_none(client: httpx.AsyncClient) -> None:
    # The session's bundle was saved without explanations (tests/test_report_browser.py serves one with).
    for path, name in (("/report", "report.html"), ("/importance", "importance.json")):
        response = await client.get(path)
        assert response.status_code == 404, response.text
        assert name in response.json()["detail"][0]["msg"]
