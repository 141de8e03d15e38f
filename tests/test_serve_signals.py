"""`leadscore serve` stops what it starts: a signal to it ends the whole BentoML process tree."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import psutil
import pytest

from benchmarks.local_server import HOST, start_server

pytestmark = pytest.mark.slow

STOP_TIMEOUT_S = 30


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((HOST, port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_serve_leaves_no_process_and_no_listener(
    signum: signal.Signals, trained_bundle: Path, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**os.environ, **service_env}

    def serve(port: int) -> list[str]:
        return [sys.executable, "-m", "leadscore", "serve", "--bundle", str(trained_bundle), "--port", str(port)]

    process, url = start_server(env, tmp_path / "serve.log", ready_timeout_s=120, command=serve, fail=pytest.fail)
    port = int(url.rsplit(":", 1)[1])
    tree = psutil.Process(process.pid).children(recursive=True)
    assert tree, "leadscore serve started no BentoML process"
    try:
        # The signal goes to the `leadscore serve` process alone, as `kill PID` does, not to its group.
        os.kill(process.pid, signum)
        process.wait(timeout=STOP_TIMEOUT_S)
        _, alive = psutil.wait_procs(tree, timeout=STOP_TIMEOUT_S)
        assert not alive, f"left running after {signum.name}: {[p.pid for p in alive]}"
        assert not _listening(port), f"something still listens on port {port}"
    finally:
        for child in tree:
            if child.is_running():
                child.kill()
        if process.poll() is None:
            process.kill()
