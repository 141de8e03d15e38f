"""`GET /report` from the real server, rendered in headless Chromium driven over DevTools.

The server is `bentoml serve` in a subprocess on a free port (as in test_service_http.py) with
a bundle that holds report.html. Chromium (Debian's package, `make system-deps`) loads the page;
the test checks that every chart drew and that the console stayed clean, and keeps a
screenshot in tests/artifacts/report.png.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket

from benchmarks.local_server import start_server, stop

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
READY_TIMEOUT_S = 90.0
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
]
N_CHARTS = 9  # gains, lift, calibration, tiers, fit x engagement cells, when (curve, AUC), accounts, drivers


@pytest.fixture(scope="module")
def report_bundle(
    bundle_with_report: Path, training_result, account_training, when_fit, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The session's bundle, its report rendered with the accounts section of a real account model and the hazard's when section."""
    import dataclasses
    import shutil

    from model.bundle import REPORT_FILE
    from training.report import explain, inputs_from_training
    from training.report_accounts import account_section
    from training.report_when import when_section

    folder = tmp_path_factory.mktemp("report_with_accounts") / "bundle"
    shutil.copytree(bundle_with_report, folder)
    _sim, _data, accounts = account_training
    inputs = dataclasses.replace(inputs_from_training(training_result), accounts=account_section(accounts),
                                 when=when_section(when_fit[1].metrics))  # fmt: skip
    (folder / REPORT_FILE).write_text(explain(inputs).html, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def server_url(
    report_bundle: Path, tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("report_server")
    log = workdir / "server.log"
    env = {
        **os.environ,
        **service_env,  # API keys: /report and /importance need the role score
        "LEADSCORE_BUNDLE": str(report_bundle),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    process, url = start_server(env, log, ready_timeout_s=READY_TIMEOUT_S, fail=pytest.fail)
    try:
        yield url
    finally:
        stop(process)


class DevTools:
    """A small Chrome DevTools Protocol client on one page target."""

    def __init__(self, ws_url: str) -> None:
        # No Origin header: Chromium refuses DevTools connections from origins it was not told to allow.
        self.socket = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message_id = self._next_id
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        for seen in self.events:
            if seen.get("method") == event:
                return seen
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            self.events.append(message)
            if message.get("method") == event:
                return message
        raise TimeoutError(f"no {event} within {timeout_s:.0f} s")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"]["value"]

    def close(self) -> None:
        self.socket.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `make system-deps` (Debian package chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = profile.parent / "chromium.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active_port.is_file() and active_port.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not open DevTools:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        port = int(active_port.read_text().splitlines()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        devtools = DevTools(page["webSocketDebuggerUrl"])
        try:
            yield devtools
        finally:
            devtools.close()
    finally:
        stop(process)


@pytest.fixture(scope="module")
def rendered(server_url: str, browser: DevTools, artifacts_dir: Path, service_keys) -> dict[str, Any]:
    """The report loaded in Chromium: what the page holds, the console, and a screenshot."""
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable")
    browser.call("Network.setExtraHTTPHeaders", headers=service_keys.header("score"))
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    browser.call("Page.navigate", url=f"{server_url}/report")
    browser.wait_for("Page.loadEventFired")
    page = browser.evaluate(
        """(() => {
            const charts = [...document.querySelectorAll("svg.chart")].map(svg => {
                const box = svg.getBoundingClientRect();
                return {label: svg.getAttribute("aria-label"), width: box.width, height: box.height,
                        marks: svg.querySelectorAll("path, rect, line, polyline, text").length};
            });
            const images = [...document.images].map(i => ({src: i.src.slice(0, 60), drawn: i.complete && i.naturalWidth > 0}));
            const canvases = [...document.querySelectorAll("canvas")].map(c => ({width: c.width, height: c.height}));
            const tables = Object.fromEntries([...document.querySelectorAll("table[id]")].map(t => [t.id, t.rows.length]));
            const sections = [...document.querySelectorAll("h2")].map(h => h.innerText);
            return {charts, images, canvases, tables, sections, title: document.title,
                    headline: (document.querySelector(".headline") || {}).innerText || "",
                    height: document.documentElement.scrollHeight};
        })()"""
    )
    height = min(int(page["height"]), 12_000)
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    screenshot = artifacts_dir / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    documents = [
        e["params"]["response"] for e in browser.events
        if e.get("method") == "Network.responseReceived" and e["params"].get("type") == "Document"
    ]
    return {"page": page, "events": list(browser.events), "screenshot": screenshot, "documents": documents}


def test_report_endpoint_serves_the_bundle_s_html(server_url: str, report_bundle: Path, service_keys) -> None:
    response = httpx.get(f"{server_url}/report", timeout=30, headers=service_keys.header("score"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == (report_bundle / "report.html").read_text(encoding="utf-8")


def test_importance_endpoint_serves_the_drivers(server_url: str, bundle_with_report: Path, service_keys) -> None:
    response = httpx.get(f"{server_url}/importance", timeout=30, headers=service_keys.header("score"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body == json.loads((bundle_with_report / "importance.json").read_text(encoding="utf-8"))
    assert body["drivers"] and {"driver", "title", "mean_abs_points", "groups"} <= set(body["drivers"][0])


def test_every_chart_drew(rendered: dict[str, Any]) -> None:
    page = rendered["page"]
    assert [d["status"] for d in rendered["documents"]] == [200]
    assert len(page["charts"]) == N_CHARTS, page["charts"]
    for chart in page["charts"]:
        assert chart["width"] > 200 and chart["height"] > 150, chart
        assert chart["marks"] > 10, chart  # axes, ticks, lines or bars: more than an empty frame
    assert all(image["drawn"] for image in page["images"]), page["images"]
    assert all(c["width"] > 0 and c["height"] > 0 for c in page["canvases"]), page["canvases"]
    assert "more conversions out of every 100" in page["headline"]
    assert page["title"].startswith("Lead scoring report")


def test_console_shows_no_error(rendered: dict[str, Any]) -> None:
    problems = []
    for event in rendered["events"]:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            problems.append(params["exceptionDetails"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(params["args"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            problems.append(params["entry"])
        elif method == "Network.loadingFailed":
            problems.append(params)
    assert not problems, problems


def test_screenshot_is_kept(rendered: dict[str, Any]) -> None:
    png = rendered["screenshot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and height >= 2000, (width, height)


def test_the_issue_15_sections_drew(rendered: dict[str, Any]) -> None:
    page = rendered["page"]
    for section in ("Fit and engagement", "Trend", "When", "Accounts"):
        assert section in page["sections"], page["sections"]
    labels = [chart["label"] for chart in page["charts"]]
    assert "Conversion rate per fit and engagement cell" in labels
    assert "Account model and roll-ups: ROC AUC on the test accounts" in labels
    assert "When leads convert: share converted by day, observed and predicted" in labels
    assert "Timing model and main model: ROC AUC per horizon" in labels
    assert page["tables"]["when"] == 4  # a header and the 7-, 30- and 90-day horizons
    assert page["tables"]["cells"] == 4  # a header and the fit thirds A, B, C
    assert page["tables"]["trend"] >= 3  # a header and at least two labels seen in the test period
    assert page["tables"]["account-gains"] == 3  # a header, the max and the noisy-or roll-ups
    assert page["tables"]["top-accounts"] == 11  # a header and the ten accounts ranked first
