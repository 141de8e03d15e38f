"""A real server on a free loopback port: started, waited for, stopped.

The benchmarks (`one_lead`) and the tests that talk to `bentoml serve` over HTTP
(tests/test_service_http.py, test_service_contract.py, test_report_browser.py) start the
service the same way; this module is that one way. It needs neither pytest nor the
benchmark harness: a test passes `fail=pytest.fail` so that a server that does not come up
fails the test with its log, a benchmark gets a `RuntimeError`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import httpx
import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
LOG_TAIL_CHARS = 3000  # how much of the server's log a failure message carries
POLL_S = 0.5


def free_port() -> int:
    """A TCP port of the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session: its group, then children that left it.

    BentoML's workers run in their own process groups; SIGTERM to the server stops them, but
    a server that has to be killed would leave them behind.
    """
    if process.poll() is not None:
        return
    children = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()


def bentoml_serve(port: int) -> list[str]:
    """The command that serves `serving.service:LeadScoring` on `port` of the loopback interface.

    Args:
        port: The port to listen on.

    Returns:
        `bentoml serve` run by this interpreter, so that it sees the same packages.
    """
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:LeadScoring", "--host", HOST, "--port", str(port)]


def _raise(message: str) -> NoReturn:
    raise RuntimeError(message)


def start_server(
    env: Mapping[str, str],
    log: Path,
    *,
    ready_timeout_s: float,
    command: Callable[[int], Sequence[str]] = bentoml_serve,
    append_log: bool = False,
    fail: Callable[[str], NoReturn] = _raise,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server on a free loopback port and wait until `GET /readyz` answers 200.

    The server runs from the project's root in a session of its own (so that `stop` can end
    its whole process group), with its standard output and error written to `log`.

    Args:
        env: The server's whole environment (not added to this process's).
        log: File the server's output goes to.
        ready_timeout_s: How long the server may take to answer `/readyz`.
        command: The command line for a port; `bentoml serve` of the scoring service by default.
        append_log: Add to `log` rather than truncate it.
        fail: Called with a message carrying the log's tail when the server exits or is not
            ready in time; it must raise (`pytest.fail` in tests). Raises `RuntimeError` by default.

    Returns:
        The running process and its base URL, e.g. "http://127.0.0.1:41234".
    """
    port = free_port()
    with log.open("ab" if append_log else "wb") as sink:
        process = subprocess.Popen(
            list(command(port)), cwd=PROJECT_ROOT, env=dict(env), stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + ready_timeout_s
    try:
        while True:
            if process.poll() is not None:
                fail(f"bentoml serve exited with {process.returncode}:\n{log.read_text()[-LOG_TAIL_CHARS:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                fail(f"server not ready after {ready_timeout_s:.0f} s:\n{log.read_text()[-LOG_TAIL_CHARS:]}")
            time.sleep(POLL_S)
    except BaseException:
        # Whatever ends the wait (not ready in time, an interrupt), no server may outlive it.
        stop(process)
        raise
