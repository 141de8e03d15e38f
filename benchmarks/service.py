"""`make bench-service`: the scoring service under load, a model swap and a crash, on loopback.

Four proofs, each against the real `bentoml serve` on 127.0.0.1, bounded in requests and time:

1. schemathesis against the service's OpenAPI document (FastAPI's), with every check on and more
   cases than `make test` (tests/test_service_contract.py, run by pytest with SCHEMATHESIS_EXAMPLES):
   cases, statuses and failures by check code (ST201, ST202, ...) go into the results;
2. a load run: `POST /score` paced at 50 requests/s for 60 s (an open-loop asyncio client:
   request i leaves at i/50 s whatever the previous ones are doing, so a slow server shows as
   latency, not as a lower rate); latency counts from the scheduled send time;
3. a swap during load: `POST /admin/reload` to a second model halfway through a paced run;
   every response must be a 200 from the old or the new model, and every request sent after
   the reload answered must come from the new one; the p99 of the requests sent while the
   reload ran is compared with the p99 of those sent before it (target: at most 2x).
   `--reloads` such runs, swapping back and forth; their median ratio is the figure;
4. a kill and restart during load: SIGKILL to the server's process group, a restart with the
   same bundle, the run going on (the client gives up on a request after 5 s, as a CRM would);
   the requests answered after the restart must give the very answers they got before the kill
   (fixed `as_of`), and the failures must all be requests sent while the server was down.

5. `/metrics` after 10,000 unique unauthenticated paths (`--paths`): its size and series before
   and after, the time of a scrape and the worker's memory; target: unchanged (a few unknown
   paths are sent first, which make the one series of unknown routes, `/{unknown}`).

6. events (`benchmarks/events.py`): `POST /events` ingested per second with rescoring of the touched
   leads (target >= 1,000 events/s on 2 cores), event-to-alert latency at a webhook receiver on
   loopback (target p50 <= 50 ms), and alerts lost across a `kill -9` of the service mid-stream
   (target 0).

Figures go to benchmarks/results/service.json and are printed; a run of some phases (`--phases`)
replaces only their figures there. `--quick` shortens every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from benchmarks.bench_model import AS_OF, PROJECT_ROOT, lead_payload, train_bench_bundle
from model.bundle import read_meta

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "service.json"
READY_TIMEOUT_S = 120
MAX_IN_FLIGHT = 200  # the client's own bound: past it a request waits (and its latency shows it)
N_DISTINCT_LEADS = 200
RESTART_TIMEOUT_S = 5.0  # the client's patience in the kill-and-restart run
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bentoml serve` of the scoring service in its own process group, on a loopback port."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait for /readyz; returns the seconds it took."""
        started = time.monotonic()
        command = [sys.executable, "-m", "bentoml", "serve", "serving.service:LeadScoring",
                   "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=self.env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {READY_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and its workers: a crash, not a shutdown."""
        assert self.process is not None
        members = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        for member in members:  # workers in their own groups
            if member.is_running():
                member.kill()
        psutil.wait_procs(members, timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        members = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        _, alive = psutil.wait_procs(members, timeout=10)
        for member in alive:
            member.kill()


@dataclass
class Answer:
    """One request of a paced run."""

    index: int
    lead: int
    sent_s: float  # scheduled send time, seconds from the start of the run
    latency_ms: float  # from the scheduled send time to the answer
    status: int | None  # None: no HTTP answer (connection refused, reset)
    error: str | None
    model_version: str | None
    body: dict[str, Any] | None


def score_bodies() -> list[dict[str, Any]]:
    """`N_DISTINCT_LEADS` requests, each scored at the fixed `AS_OF` with reasons."""
    return [
        {"lead": lead_payload(n_interactions=20, seed=seed), "as_of": AS_OF.isoformat(), "top_k": 3}
        for seed in range(N_DISTINCT_LEADS)
    ]


async def paced_run(
    url: str,
    headers: dict[str, str],
    rate: float,
    seconds: float,
    events: list[Any] | None = None,
    timeout_s: float = 30.0,
) -> list[Answer]:
    """`POST /score` at `rate` requests/s for `seconds`, open loop; `events` run beside it
    (coroutine functions called with the run's start time, loop clock); a request not
    answered within `timeout_s` counts as failed."""
    bodies = score_bodies()
    loop = asyncio.get_running_loop()
    answers: list[Answer] = []
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s, limits=limits) as client:
        start = loop.time() + 0.5

        async def one(i: int) -> None:
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            lead = i % len(bodies)
            async with in_flight:
                try:
                    response = await client.post("/score", json=bodies[lead])
                    body = response.json() if response.status_code == 200 else None
                    answer = Answer(i, lead, scheduled - start, 1000 * (loop.time() - scheduled), response.status_code,
                                    None if response.status_code == 200 else response.text[:200],
                                    body["model_version"] if body else None, body)  # fmt: skip
                except httpx.HTTPError as exc:
                    answer = Answer(i, lead, scheduled - start, 1000 * (loop.time() - scheduled), None,
                                    exc.__class__.__name__, None, None)  # fmt: skip
            answers.append(answer)

        tasks = [one(i) for i in range(int(rate * seconds))]
        await asyncio.gather(*tasks, *(event(start) for event in events or []))
    return sorted(answers, key=lambda a: a.index)


def latency_summary(answers: list[Answer]) -> dict[str, Any]:
    ok = np.array([a.latency_ms for a in answers if a.status == 200])
    span = max((a.sent_s for a in answers), default=0.0) - min((a.sent_s for a in answers), default=0.0)
    return {
        "requests": len(answers),
        "ok": int(ok.size),
        "errors": len(answers) - int(ok.size),
        "sent_per_s": round((len(answers) - 1) / span, 1) if span else None,
        "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok.size else None,
        "p95_ms": round(float(np.percentile(ok, 95)), 1) if ok.size else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 1) if ok.size else None,
        "max_ms": round(float(ok.max()), 1) if ok.size else None,
    }


def run_schemathesis(examples: int, workdir: Path) -> dict[str, Any]:
    """tests/test_service_contract.py with `examples` cases per operation; its counts."""
    artifact = PROJECT_ROOT / "tests" / "artifacts" / "schemathesis.json"
    artifact.unlink(missing_ok=True)
    env = {**os.environ, "SCHEMATHESIS_EXAMPLES": str(examples), "BENTOML_DO_NOT_TRACK": "true"}
    command = [sys.executable, "-m", "pytest", "tests/test_service_contract.py", "-q", "-p", "no:cacheprovider",
               "--basetemp", str(workdir / "pytest")]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=3600)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    counts = json.loads(artifact.read_text()) if artifact.exists() else {}
    return {"examples_per_operation": examples, "pytest": summary, "passed": done.returncode == 0,
            "cases": counts.get("total"), "statuses": counts.get("statuses"), "cases_per_operation": counts.get("cases"),
            "failures_by_check": counts.get("failures"), "examples_of_failures": counts.get("examples_of_failures")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load run")
    # 120 per operation and kind of data: ~1,100 cases (the health endpoints take no input: one case each).
    parser.add_argument("--examples", type=int, default=120, help="schemathesis cases per operation and kind of data")
    parser.add_argument("--quick", action="store_true", help="10 s runs, 20 schemathesis cases")
    parser.add_argument("--paths", type=int, default=10_000, help="unique unauthenticated paths of the metrics phase")
    parser.add_argument("--phases", default="schemathesis,load,swap,restart,metrics,events", help="which to run, comma-separated")
    parser.add_argument("--reloads", type=int, default=3, help="swap runs, each with one reload under load")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if args.quick:
        args.seconds, args.examples = 10.0, 20
    side_seconds = max(10.0, args.seconds / 2)  # the swap and restart runs

    workdir = Path(tempfile.mkdtemp(prefix="leadscore-bench-service-"))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_start": round(os.getloadavg()[0], 2)},
        "rate_per_s": args.rate,
    }

    if "schemathesis" in phases:
        print(f"schemathesis, {args.examples} cases per operation ...", flush=True)
        results["schemathesis"] = run_schemathesis(args.examples, workdir)
        print(f"  {results['schemathesis']}", flush=True)

    print("training the two models the runs swap between ...", flush=True)
    old_bundle = train_bench_bundle(workdir, 3_000, seed=11)
    new_bundle = train_bench_bundle(workdir, 3_000, seed=12)
    score_key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    score_log = workdir / "scores.jsonl"
    env = {
        **os.environ,
        "LEADSCORE_BUNDLE": str(old_bundle),
        "LEADSCORE_API_KEYS": f"{score_key}:score,{admin_key}:admin",
        "LEADSCORE_STATE_DIR": str(workdir / "state"),
        "LEADSCORE_SCORE_LOG": str(score_log),
        "LEADSCORE_POLL_SECONDS": "0",
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONUNBUFFERED": "1",
    }
    score_headers = {"Authorization": f"Bearer {score_key}"}
    admin_headers = {"Authorization": f"Bearer {admin_key}"}
    log = workdir / "server.log"
    server = Server(env, free_port(), log)
    try:
        results["start_s"] = round(server.start(), 1)

        if "load" in phases:
            print(f"load: {args.rate:g} requests/s for {args.seconds:g} s ...", flush=True)
            load = asyncio.run(paced_run(server.url, score_headers, args.rate, args.seconds))
            results["load"] = latency_summary(load)
            results["load"]["error_kinds"] = error_kinds(load)
            results["load"]["score_log_records"] = sum(1 for _ in score_log.open()) if score_log.exists() else 0
            print(f"  {results['load']}", flush=True)
        if "swap" in phases:
            runs = []
            for i in range(args.reloads):  # back and forth: old -> new -> old ...
                runs.append(swap_run(server, score_headers, admin_headers, (new_bundle, old_bundle)[i % 2], args.rate,
                                     side_seconds))  # fmt: skip
                print(f"  {runs[-1]}", flush=True)
            results["swap"] = swap_summary(runs)
            print(f"  {({k: v for k, v in results['swap'].items() if k != 'runs'})}", flush=True)
        if "metrics" in phases:
            results["metrics"] = metrics_run(server, args.paths)
            print(f"  {results['metrics']}", flush=True)
        if "restart" in phases:
            server.stop()  # a fresh server for a run of its own
            server.start()
            results["restart"] = restart_run(server, score_headers, args.rate, side_seconds)
            print(f"  {results['restart']}", flush=True)
    finally:
        server.stop()
    results["server_log_emails"] = len(EMAIL.findall(log.read_text(errors="replace")))
    if "events" in phases:  # a server of its own, its alerts pointed at a receiver (benchmarks/events.py)
        from benchmarks.events import run_events

        results["events"] = run_events(workdir, old_bundle, side_seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if phases != set(parser.get_default("phases").split(",")) and args.out.exists():
        results = {**json.loads(args.out.read_text()), **results}  # the other phases' figures stay
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"written to {args.out}")


def error_kinds(answers: list[Answer]) -> dict[str, int]:
    """How many requests failed, by kind (HTTP status or transport error)."""
    return dict(Counter(a.error if a.status is None else f"HTTP {a.status}" for a in answers if a.status != 200))


def swap_run(
    server: Server, headers: dict[str, str], admin_headers: dict[str, str], new_bundle: Path, rate: float, seconds: float
) -> dict[str, Any]:
    """A paced run with `POST /admin/reload` to `new_bundle` halfway."""
    old_version = httpx.get(f"{server.url}/model", headers=headers, timeout=10).json()["model_version"]
    new_version = read_meta(new_bundle)["model_version"]
    print(f"swap during load: {old_version} -> {new_version} at {seconds / 2:g} s ...", flush=True)
    swap: dict[str, Any] = {}

    async def reload_halfway(start: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start + seconds / 2 - loop.time()))
        swap["requested_s"] = loop.time() - start
        async with httpx.AsyncClient(base_url=server.url, headers=admin_headers, timeout=60) as admin:
            response = await admin.post("/admin/reload", json={"bundle": str(new_bundle)})
        swap["answered_s"] = loop.time() - start
        swap["reload_status"] = response.status_code
        swap["reload"] = response.json()

    answers = asyncio.run(paced_run(server.url, headers, rate, seconds, [reload_halfway]))
    versions = [a.model_version for a in answers]
    after = [a for a in answers if a.sent_s > swap["answered_s"]]
    before = [a for a in answers if a.sent_s + a.latency_ms / 1000 < swap["requested_s"]]
    during = latency_summary([a for a in answers if swap["requested_s"] <= a.sent_s <= swap["answered_s"]])
    steady = latency_summary([a for a in answers if a.sent_s < swap["requested_s"]])
    out = {
        **latency_summary(answers),
        "steady_p99_ms": steady["p99_ms"],
        "during_reload": during,
        "reload_p99_over_steady_p99": (
            round(during["p99_ms"] / steady["p99_ms"], 2) if during["p99_ms"] and steady["p99_ms"] else None
        ),
        "error_kinds": error_kinds(answers),
        "old_version": old_version,
        "new_version": new_version,
        "reload_status": swap["reload_status"],
        "reload_seconds": swap["reload"].get("seconds"),
        "answered_by_old": versions.count(old_version),
        "answered_by_new": versions.count(new_version),
        "other_answers": sum(v not in (old_version, new_version) for v in versions),
        "sent_after_reload_answered": len(after),
        "of_which_old": sum(a.model_version != new_version for a in after),
        "answered_before_reload_by_new": sum(a.model_version == new_version for a in before),
    }
    out["clean"] = (
        out["errors"] == 0 and out["other_answers"] == 0 and out["of_which_old"] == 0
        and out["answered_before_reload_by_new"] == 0
    )  # fmt: skip
    return out


def swap_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The swap runs' medians: steady p99, p99 during the reload and their ratio (target <= 2)."""
    ratios = [r["reload_p99_over_steady_p99"] for r in runs if r["reload_p99_over_steady_p99"] is not None]
    median_ratio = round(float(np.median(ratios)), 2) if ratios else None
    return {
        "reloads": len(runs),
        "median_steady_p99_ms": round(float(np.median([r["steady_p99_ms"] for r in runs])), 1),
        "median_reload_p99_ms": round(float(np.median([r["during_reload"]["p99_ms"] for r in runs])), 1),
        "median_reload_seconds": round(float(np.median([r["reload_seconds"] or np.nan for r in runs])), 2),
        "median_reload_p99_over_steady_p99": median_ratio,
        "target_met": median_ratio is not None and median_ratio <= 2.0,
        "clean": all(r["clean"] for r in runs),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # the machine's, beside the figures it made
        "runs": runs,
    }


def metrics_size(url: str) -> dict[str, Any]:
    """One scrape of `/metrics`: its size, its series (lines that are not comments) and how long it took."""
    started = time.perf_counter()
    text = httpx.get(f"{url}/metrics", timeout=300).text
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return {"bytes": len(text), "series": series, "scrape_ms": round(1000 * (time.perf_counter() - started), 1)}


def worker_rss_mib(server: Server) -> float:
    assert server.process is not None
    members = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
    return round(sum(m.memory_info().rss for m in members) / 2**20, 1)


def metrics_run(server: Server, n_paths: int, warm_up: int = 10, concurrency: int = 16) -> dict[str, Any]:
    """`/metrics` before and after `n_paths` unique unauthenticated paths (GET, no key: 401 each)."""
    print(f"/metrics after {n_paths:,} unique unauthenticated paths ...", flush=True)

    async def probe(paths: list[str]) -> Counter[int]:
        statuses: Counter[int] = Counter()
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def one(path: str) -> None:
                async with gate:
                    statuses[(await client.get(path)).status_code] += 1

            await asyncio.gather(*(one(path) for path in paths))
        return statuses

    token = secrets.token_hex(4)
    first = metrics_size(server.url)
    asyncio.run(probe([f"/warm-up-{token}-{i}" for i in range(warm_up)]))
    before = {**metrics_size(server.url), "worker_rss_mib": worker_rss_mib(server)}
    started = time.perf_counter()
    statuses = asyncio.run(probe([f"/probe-{token}-{i}/x" for i in range(n_paths)]))
    seconds = time.perf_counter() - started
    after = {**metrics_size(server.url), "worker_rss_mib": worker_rss_mib(server)}
    return {
        "paths": n_paths,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "paths_per_s": round(n_paths / seconds, 1),
        "before_any_unknown_path": first,
        f"after_{warm_up}_warm_up_paths": before,
        "after": after,
        "growth_bytes": after["bytes"] - before["bytes"],
        "growth_series": after["series"] - before["series"],
        "unchanged": after["series"] == before["series"] and after["bytes"] - before["bytes"] < 1_000,
    }


def restart_run(server: Server, headers: dict[str, str], rate: float, seconds: float) -> dict[str, Any]:
    """A paced run with a SIGKILL of the server at `seconds / 2` and an immediate restart."""
    print("kill -9 and restart during load ...", flush=True)
    restart: dict[str, Any] = {}

    async def crash_halfway(start: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start + seconds / 2 - loop.time()))
        restart["killed_s"] = loop.time() - start
        await asyncio.to_thread(server.kill)
        restart["ready_s"] = restart["killed_s"] + await asyncio.to_thread(server.start)

    # Long enough after the restart (about 15 s here) to send every lead again. A CRM gives up on
    # a request after a few seconds: without that, the requests queued while the new server
    # starts would be served one after the other for as long as the run lasts.
    answers = asyncio.run(
        paced_run(server.url, headers, rate, seconds / 2 + 30 + N_DISTINCT_LEADS / rate, [crash_halfway], RESTART_TIMEOUT_S)
    )
    killed, ready = restart["killed_s"], restart["ready_s"]
    first: dict[int, dict[str, Any]] = {}
    for a in answers:
        if a.body is not None and a.sent_s < killed:
            first.setdefault(a.lead, a.body)
    compared = [a for a in answers if a.body is not None and a.sent_s > ready and a.lead in first]
    down = [a for a in answers if killed <= a.sent_s <= ready]
    settled = [a for a in answers if a.sent_s > ready + 5]  # after the restart's first seconds
    out = {
        **latency_summary(answers),
        "killed_at_s": round(killed, 1),
        "ready_again_at_s": round(ready, 1),
        "before_kill": latency_summary([a for a in answers if a.sent_s + a.latency_ms / 1000 < killed]),
        "sent_while_down": len(down),
        "sent_while_down_failed": error_kinds(down),
        "sent_while_down_answered_later": sum(a.status == 200 for a in down),
        "sent_after_ready": latency_summary([a for a in answers if a.sent_s > ready]),
        "sent_after_ready_errors": error_kinds([a for a in answers if a.sent_s > ready]),
        "settled_5s_after_ready": latency_summary(settled),
        "compared_after_restart": len(compared),
        "identical": sum(a.body == first[a.lead] for a in compared),
    }
    out["scores_identical"] = out["compared_after_restart"] > 0 and out["identical"] == out["compared_after_restart"]
    return out


if __name__ == "__main__":
    main()
