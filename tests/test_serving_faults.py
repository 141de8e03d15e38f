"""Serving faults of issue 14, item 1, each pinned: bounded /metrics in a folder of each service's
own, untrusted bundles loaded where a crash is harmless, bundles checked for meaning, registry
errors that are errors, and `serve` that ends with one line when it has nothing to serve.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import model.check as model_check
from benchmarks.bench_model import example_lead
from benchmarks.local_server import PROJECT_ROOT, free_port, start_server, stop
from model.bundle import read_meta
from model.check import CHILD_NICENESS, BundleInvalid, check_in_child, load_and_check
from serving.metrics import UNKNOWN_ROUTE, RouteLabels, route_templates
from serving.service import BundleRejected, LeadScoring

AS_OF = "2024-05-01T00:00:00Z"
REQUEST = {"lead": example_lead("L-1", "2024-03-01T10:00:00Z", ({"type": "demo_request", "occurred_at": "2024-04-25T16:00:00Z"},)), "as_of": AS_OF}
READY_TIMEOUT_S = 180.0


def edited(bundle: Path, destination: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a bundle whose bundle.json `change` edits in place."""
    shutil.copytree(bundle, destination)
    meta = json.loads((destination / "bundle.json").read_text())
    change(meta)
    (destination / "bundle.json").write_text(json.dumps(meta))
    return destination


def damaged_model(bundle: Path, destination: Path, how: str) -> Path:
    """A copy of a bundle whose model.txt is truncated, or has a NaN or 1e308 leaf, as an attacker would write it."""
    shutil.copytree(bundle, destination)
    model = destination / "model.txt"
    text = model.read_text()
    if how == "truncated":
        model.write_text(text[: len(text) // 3])
    else:
        value = {"nan": "nan", "1e308": "1e308"}[how]
        model.write_text(re.sub(r"^leaf_value=\S+", f"leaf_value={value}", text, count=1, flags=re.MULTILINE))
    return destination


# -- 3: a bundle is checked for meaning, not counts ------------------------------------------------


def _reverse_features(meta: dict[str, Any]) -> None:
    meta["feature_names"].reverse()


def _empty_quantiles(meta: dict[str, Any]) -> None:
    meta["score_quantiles"] = []


def _invert_tiers(meta: dict[str, Any]) -> None:
    meta["tiers"] = {"hot": meta["tiers"]["warm"], "warm": meta["tiers"]["hot"]}


def _huge_platt_slope(meta: dict[str, Any]) -> None:
    meta["calibration"] = {"method": "platt", "x": [], "y": [], "a": 1e308, "b": 0.0}


def _another_smoke_probability(meta: dict[str, Any]) -> None:
    meta["smoke"]["probability"] = round(1 - meta["smoke"]["probability"], 6)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_reverse_features, r"feature_names: the same \d+ names as the feature spec's order in another order"),
        (_empty_quantiles, "score_quantiles: 0 values, the 0-100 score needs 101"),
        (_invert_tiers, "tiers: hot .* and warm .* must satisfy 0 <= warm <= hot <= 1"),
        (_huge_platt_slope, "calibration: Platt slope a=1e[+]308"),
        (_another_smoke_probability, "gives the smoke lead the probability .*, training stored"),
    ],
    ids=["reversed-features", "empty-quantiles", "inverted-tiers", "platt-slope-1e308", "smoke-probability"],
)
def test_a_bundle_wrong_in_meaning_is_refused_naming_the_problem(
    trained_bundle: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], says: str
) -> None:
    bad = edited(trained_bundle, tmp_path / "bad", change)

    with pytest.raises(BundleInvalid, match=says):
        load_and_check(bad)


def test_training_stores_the_smoke_lead_and_its_probability(trained_bundle: Path) -> None:
    smoke = read_meta(trained_bundle)["smoke"]

    assert smoke["lead"]["lead_id"] == "smoke-test" and 0.0 < smoke["probability"] < 1.0
    _model, notes = load_and_check(trained_bundle)
    assert notes == []


def test_an_older_bundle_without_a_smoke_probability_serves_with_a_note(trained_bundle: Path, tmp_path: Path) -> None:
    older = edited(trained_bundle, tmp_path / "older", lambda meta: meta.pop("smoke"))

    _model, notes = load_and_check(older)

    assert len(notes) == 1 and "stores no smoke-lead probability" in notes[0] and "not compared" in notes[0]


# -- 2: an untrusted bundle is loaded where a crash cannot take the worker down ------------------


@pytest.mark.parametrize("how", ["truncated", "nan", "1e308"])
def test_a_model_file_that_crashes_lightgbm_ends_only_the_check_process(trained_bundle: Path, tmp_path: Path, how: str) -> None:
    bad = damaged_model(trained_bundle, tmp_path / how, how)

    # LightGBM ends on its Fatal error with an abort; reading a truncated file it may run past the
    # end of its buffer into memory it never wrote, and a segfault can come first (seen once in a
    # fresh clone's run, after the Fatal message). Either way only the check process dies.
    with pytest.raises(BundleInvalid, match=r"crashed the check process \(it was killed by SIG(ABRT|SEGV)\): .*\[Fatal\]"):
        check_in_child(bad)


def test_the_check_process_yields_to_requests_from_its_start(trained_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its imports take seconds of CPU: lowered by the child itself, after them, they ran at the server's priority.
    seen: list[int] = []
    lower = model_check._yield_to_requests

    def lower_and_look(pid: int) -> None:
        lower(pid)
        seen.append(os.getpriority(os.PRIO_PROCESS, pid))  # before the child has been waited for

    monkeypatch.setattr(model_check, "_yield_to_requests", lower_and_look)
    assert check_in_child(trained_bundle) == []
    assert seen == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS)]


# -- 1 and 2 over HTTP: bounded /metrics; a crashing bundle refused with 422 -----------------------


@pytest.fixture(scope="module")
def server(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("faults-server")
    env = {
        **os.environ, **service_env, "LEADSCORE_BUNDLE": str(trained_bundle),
        "BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
    }  # fmt: skip
    process, url = start_server(env, workdir / "server.log", ready_timeout_s=READY_TIMEOUT_S, fail=pytest.fail)
    try:
        yield url
    finally:
        stop(process)


def metrics_text(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def test_route_labels() -> None:
    labels = RouteLabels(["/score", "/leads/{lead_id}/score", "/static_content/{path}", "/"])

    assert labels.of("/score") == "/score"
    assert labels.of("/leads/L-1/score") == "/leads/{lead_id}/score"
    assert labels.of("/static_content/css/a.css") == "/static_content/{path}"
    assert labels.of("/") == "/"
    assert labels.of("/score/x") == labels.of("/admin/../etc") == labels.of("/%2e%2e") == UNKNOWN_ROUTE


def test_the_service_routes_are_known_by_their_templates(service_app) -> None:
    templates = route_templates(service_app.routes)

    assert {"/score", "/score_batch", "/model", "/admin/reload", "/livez", "/readyz", "/metrics", "/docs.json"} <= set(templates)
    assert UNKNOWN_ROUTE not in templates


@pytest.mark.slow
def test_unknown_paths_add_no_series_to_metrics(server: str, service_keys) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.post("/score", json=REQUEST, headers=service_keys.header()).status_code == 200
        for i in range(10):  # the first unknown paths make the one series of unknown routes
            assert http.get(f"/warm-up-{i}").status_code == 401
        before = len(metrics_text(server))
        for i in range(300):
            assert http.get(f"/probe-{i}/x").status_code == 401
        text = metrics_text(server)

    assert len(text) - before < 2_000, f"/metrics grew by {len(text) - before:,} bytes for 300 unknown paths"
    assert "probe-" not in text and "warm-up-" not in text
    assert f'endpoint="{UNKNOWN_ROUTE}"' in text and 'endpoint="/score"' in text


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "nan"])
def test_reloading_a_crashing_bundle_is_a_422_and_the_old_model_keeps_serving(
    server: str, service_keys, trained_bundle: Path, tmp_path: Path, how: str
) -> None:
    bad = damaged_model(trained_bundle, tmp_path / how, how)
    with httpx.Client(base_url=server, timeout=60) as http:
        refused = http.post("/admin/reload", json={"bundle": str(bad)}, headers=service_keys.header("admin"))
        assert refused.status_code == 422, refused.text
        message = refused.json()["detail"][0]["msg"]
        assert "crashed the check process" in message and "Model format error" in message, message
        scored = http.post("/score", json=REQUEST, headers=service_keys.header(), timeout=5)

    assert scored.status_code == 200, scored.text
    assert scored.json()["model_version"] == read_meta(trained_bundle)["model_version"]


def test_reload_refuses_a_bundle_wrong_in_meaning(trained_bundle: Path, service_env: dict[str, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LEADSCORE_BUNDLE", str(trained_bundle))
    service = LeadScoring()
    reversed_features = edited(trained_bundle, tmp_path / "reversed", _reverse_features)

    with pytest.raises(BundleRejected, match=f"bundle at {reversed_features} .*feature_names: the same"):
        service.reload(bundle=str(reversed_features))
    assert service.model_card().model_version == read_meta(trained_bundle)["model_version"]


# -- 1: each service its own Prometheus folder --------------------------------------------------


def leadscore_serve(bundle: Path) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", "leadscore", "serve", "--bundle", str(bundle), "--port", str(port)]


def requests_counted(url: str, path: str) -> float:
    pattern = re.compile(rf'^bentoml_service_request_total\{{[^}}]*endpoint="{re.escape(path)}"[^}}]*http_response_code="200"[^}}]*\}} (\S+)$', re.M)
    return sum(float(count) for count in pattern.findall(metrics_text(url)))


@pytest.mark.slow
def test_two_services_on_one_host_keep_their_own_metrics(
    trained_bundle: Path, service_env: dict[str, str], service_keys, tmp_path: Path
) -> None:
    env = {**os.environ, **service_env, "HOME": str(tmp_path / "home"), "LEADSCORE_STATE_DIR": str(tmp_path / "state")}
    env.pop("BENTOML_HOME", None)
    first, first_url = start_server(env, tmp_path / "first.log", ready_timeout_s=READY_TIMEOUT_S,
                                    command=leadscore_serve(trained_bundle), fail=pytest.fail)  # fmt: skip
    try:
        for _ in range(3):
            assert httpx.get(f"{first_url}/model", headers=service_keys.header(), timeout=30).status_code == 200
        assert requests_counted(first_url, "/model") == 3
        second, second_url = start_server(env, tmp_path / "second.log", ready_timeout_s=READY_TIMEOUT_S,
                                          command=leadscore_serve(trained_bundle), fail=pytest.fail)  # fmt: skip
        try:
            assert httpx.get(f"{second_url}/model", headers=service_keys.header(), timeout=30).status_code == 200
            assert requests_counted(first_url, "/model") == 3  # the second start emptied no folder of the first
            assert requests_counted(second_url, "/model") == 1
        finally:
            stop(second)
    finally:
        stop(first)
    assert sorted(p.name for p in (tmp_path / "state" / "bentoml").iterdir()) == sorted(
        f"127.0.0.1-{url.rsplit(':', 1)[1]}" for url in (first_url, second_url)
    )


# -- 2 and 4: `serve` with nothing to serve ends with one line ------------------------------------


def serve_once(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`leadscore serve` that must end by itself: a server that restarts its worker forever is a timeout."""
    command = [sys.executable, "-m", "leadscore", "serve", "--port", str(free_port()), *args]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        out, err = process.communicate()
        pytest.fail(f"leadscore serve {' '.join(args)} did not end within 120 s:\n{(out + err)[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def output_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and " INFO mlflow." not in line]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "1e308"])
def test_serve_with_a_crashing_bundle_ends_with_one_line(
    trained_bundle: Path, service_env: dict[str, str], tmp_path: Path, how: str
) -> None:
    bad = damaged_model(trained_bundle, tmp_path / how, how)

    done = serve_once(["--bundle", str(bad)], {**os.environ, **service_env})

    assert done.returncode == 2, done
    lines = output_lines(done)
    assert len(lines) == 1 and lines[0].startswith(f"error: the model bundle at {bad} (from --bundle) cannot serve:"), lines
    assert "crashed the check process" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("store", ["missing", "damaged"])
def test_serve_without_a_champion_ends_with_one_line(service_env: dict[str, str], tmp_path: Path, store: str) -> None:
    database = tmp_path / "registry" / "mlflow.db"
    if store == "damaged":
        database.parent.mkdir()
        database.write_bytes(b"not a database " * 400)
    env = {**os.environ, **service_env, "MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
    env.pop("LEADSCORE_BUNDLE", None)

    done = serve_once([], env)

    assert done.returncode == 2, done
    lines = output_lines(done)
    assert len(lines) == 1 and lines[0].startswith("error: LEADSCORE_BUNDLE is not set and the registry"), lines
    assert ("no such database" if store == "missing" else "not a database") in lines[0]
    assert database.exists() == (store == "damaged")  # a missing registry is not created


# -- 4: a service polling the champion recovers when its store is restored -----------------------


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.2)


def _registry_in_a_child(uri: str, bundles: list[Path], champion: str) -> None:
    # In another process: MLflow keeps one engine per URI per process, and this test is about the service's.
    code = (
        "import sys; from mlflow import MlflowClient; c = MlflowClient(sys.argv[1]); c.create_registered_model('leadscore')\n"
        "for source in sys.argv[3:]: c.create_model_version('leadscore', source=source)\n"
        "c.set_registered_model_alias('leadscore', 'champion', sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, uri, champion, *map(str, bundles)], check=True, capture_output=True, timeout=300)


@pytest.mark.slow
def test_the_champion_poll_recovers_when_the_registry_is_restored(
    trained_bundle: Path, service_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    one = edited(trained_bundle, tmp_path / "v-one", lambda meta: meta.update(model_version="v-one"))
    two = edited(trained_bundle, tmp_path / "v-two", lambda meta: meta.update(model_version="v-two"))
    live, moved = tmp_path / "live" / "mlflow.db", tmp_path / "moved" / "mlflow.db"
    live.parent.mkdir()
    moved.parent.mkdir()
    _registry_in_a_child(f"sqlite:///{live}", [one, two], champion="1")
    _registry_in_a_child(f"sqlite:///{moved}", [one, two], champion="2")  # the backup restored later: champion moved
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LEADSCORE_BUNDLE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{live}")
    monkeypatch.setenv("LEADSCORE_POLL_SECONDS", "1")
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")  # as the service sets it; undone after the test
    caplog.set_level(logging.WARNING, logger="serving.service")
    service = LeadScoring()
    try:
        assert service.model_card().model_version == "v-one"
        with live.open("r+b") as damaged:  # damaged in place
            damaged.write(b"not a database " * 400)
        wait_for(lambda: "cannot read the 'champion' alias" in caplog.text, "named registry error from the poll")
        assert service.model_card().model_version == "v-one"  # still serving what it had
        os.replace(moved, live)  # restored, with the champion moved meanwhile

        wait_for(lambda: service.model_card().model_version == "v-two", "swap once the registry is back", timeout_s=60)
    finally:
        service.stop_following()
