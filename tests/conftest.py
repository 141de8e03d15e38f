"""Shared fixtures: a small simulated data set and a model trained on it, once per session."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GRID = "default"  # the grid leadscore ships (sources/builtin_grids/default.yaml)
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"


@pytest.fixture(autouse=True)
def _isolated_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ; keep tests apart."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def _isolated_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Secrets a service or CLI creates on first use (API key, lead key) go to a temporary folder, not .leadscore."""
    monkeypatch.setenv("LEADSCORE_STATE_DIR", str(tmp_path_factory.getbasetemp() / "state"))
    for name in ("LEADSCORE_API_KEYS", "LEADSCORE_API_KEYS_FILE", "LEADSCORE_LEAD_KEY", "LEADSCORE_SCORE_LOG"):
        monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class ServiceKeys:
    """The keys services under test start with (`service_env`)."""

    score: str = "test-score-key-0123456789"
    admin: str = "test-admin-key-0123456789"
    lead: str = "test-lead-key-0123456789"

    def header(self, role: str = "score") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.score if role == 'score' else self.admin}"}


@pytest.fixture(scope="session")
def service_keys() -> ServiceKeys:
    return ServiceKeys()


@pytest.fixture(scope="session")
def service_env(service_keys: ServiceKeys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment every service under test starts with: one key per role, a known lead key, no polling."""
    return {
        "LEADSCORE_API_KEYS": f"{service_keys.score}:score,{service_keys.admin}:admin",
        "LEADSCORE_LEAD_KEY": service_keys.lead,
        "LEADSCORE_POLL_SECONDS": "0",
        "LEADSCORE_STATE_DIR": str(tmp_path_factory.getbasetemp() / "service-state"),
        "BENTOML_DO_NOT_TRACK": "true",
    }


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The event loop of every async test and fixture (anyio's pytest plugin)."""
    return "asyncio"


@pytest.fixture(scope="session")
def lead_store_url(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """`lead_store_url(name)`: the URL of a new SQLite lead store, for a module's service."""
    return lambda name: f"sqlite:///{tmp_path_factory.mktemp(name) / 'leads.db'}"


@pytest.fixture(scope="session")
def service_app():
    """The service's ASGI app, one per test session: BentoML registers Prometheus metrics when
    an app first runs, and a second app in the same process fails with "Duplicated timeseries".
    Each test module enters its lifespan with its own environment (a new service instance)."""
    from serving.service import LeadScoring

    return LeadScoring.to_asgi()


# The service sets it in its own process at start-up (serving.service): restored after each start.
POOL_ENV = "MLFLOW_SQLALCHEMYSTORE_POOLCLASS"


def undo_after(env: pytest.MonkeyPatch, name: str) -> None:
    """Have `env` restore `name` as it is now, even when something else sets it meanwhile."""
    env.setenv(name, os.environ.get(name, ""))
    if not os.environ[name]:
        env.delenv(name)


@pytest.fixture
def service_pool_env_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test that creates a service instance itself: `POOL_ENV` is put back after it."""
    undo_after(monkeypatch, POOL_ENV)


StartService = Callable[..., AbstractAsyncContextManager[object]]


@pytest.fixture(scope="session")
def start_service(service_app, service_env: dict[str, str], service_keys: ServiceKeys, tmp_path_factory: pytest.TempPathFactory) -> StartService:
    """`start_service(bundle, role="score", **env)`: the session's ASGI app started on a bundle with
    `service_env` and these variables (its lifespan creates a new service instance), and an httpx
    client calling it with a key of that role. For a module's `client` fixture."""
    import httpx

    @asynccontextmanager
    async def started(bundle: Path, role: str = "score", **variables: str) -> AsyncIterator[httpx.AsyncClient]:
        with pytest.MonkeyPatch.context() as env:
            for name, value in {**service_env, "LEADSCORE_BUNDLE": str(bundle),
                                "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml")), **variables}.items():  # fmt: skip
                env.setenv(name, value)
            undo_after(env, POOL_ENV)
            async with service_app.router.lifespan_context(service_app):
                transport = httpx.ASGITransport(app=service_app)
                async with httpx.AsyncClient(transport=transport, base_url="http://leadscore.test", headers=service_keys.header(role)) as http:
                    yield http

    return started


@pytest.fixture(scope="session")
def simulated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 simulated leads in the data contract's files (seed 11)."""
    from simulator.funnel import simulate, write_simulation

    out = tmp_path_factory.mktemp("sim")
    write_simulation(simulate(3_000, seed=11), out)
    return out


@pytest.fixture(scope="session")
def simulated_dataset(simulated_dir: Path):
    from sources.folder import load_dataset
    from training.config import ProjectConfig

    return load_dataset(simulated_dir, ProjectConfig().features)


@pytest.fixture(scope="session")
def training_result(simulated_dir: Path, simulated_dataset):
    from simulator.funnel import read_truth, true_conversion_probability
    from sources.grids import load_grid
    from training.config import ProjectConfig
    from training.pipeline import run_training

    config = ProjectConfig()
    config.training.n_bootstrap = 50
    truth = read_truth(simulated_dir / "truth.csv")
    return run_training(
        simulated_dataset,
        config.features,
        config.training,
        load_grid(DEFAULT_GRID),
        lambda snaps, h: true_conversion_probability(truth, snaps["lead_id"].to_numpy(), snaps["as_of"], h),
    )


@pytest.fixture(scope="session")
def when_fit(training_result, simulated_dataset, simulated_dir: Path):
    """The trained model with a hazard fit on the same periods (served over the measured model's encoding), and the fit."""
    from simulator.funnel import read_truth, true_conversion_probability
    from training.config import ProjectConfig
    from training.hazard import fit_when

    truth = read_truth(simulated_dir / "truth.csv")
    config = ProjectConfig()
    config.training.n_bootstrap = 50

    def oracle(snaps, days: float):
        return true_conversion_probability(truth, snaps["lead_id"].to_numpy(), snaps["as_of"], days)

    model, fit, line = fit_when(training_result, training_result.model, simulated_dataset, config.features, config.training, oracle)
    assert fit is not None, line
    return model, fit


@pytest.fixture(scope="session")
def trained_bundle(training_result, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a bundle trained on the simulated set."""
    return training_result.model.save(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep files worth looking at after a run (screenshots, reports)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def explanations(training_result):
    """Drivers, learned grid and leadership report of the trained model (training.report)."""
    from training.report import explain, inputs_from_training

    return explain(inputs_from_training(training_result))


@pytest.fixture(scope="session")
def account_training():
    """The account model trained on 2,000 simulated accounts: (simulation, validated data, result)."""
    from features.contract import validate
    from simulator.accounts import simulate_accounts, true_account_conversion_probability
    from training.accounts import run_account_training
    from training.config import ProjectConfig

    sim = simulate_accounts(2000, seed=3)
    config = ProjectConfig()
    config.training.n_bootstrap = 50
    config.training.seed = 3
    data = validate(sim.leads, sim.interactions, config.features, sim.export_at)
    result = run_account_training(
        data.leads, data.interactions, config.features, config.training, data.data_end, accounts=sim.accounts,
        oracle=lambda snaps, h: true_account_conversion_probability(sim.truth, snaps["account_id"], snaps["as_of"], h),
    )  # fmt: skip
    return sim, data, result


@pytest.fixture(scope="session")
def bundle_with_report(training_result, explanations, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the trained bundle with report.html, importance.json and learned_grid.yaml."""
    from training.report import write_bundle_files

    bundle = training_result.model.save(tmp_path_factory.mktemp("bundle_with_report") / "bundle")
    write_bundle_files(explanations, bundle)
    return bundle


def make_static_export(n: int = 800, seed: int = 0):
    """A static export (one row per lead): honest signals and a status sales set after the outcome.

    Columns: `lead_id`, `converted` (0/1), `source`, `status` (right 93 % of the time),
    `minutes`, `visits`.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    source = rng.choice(["Google", "Referral", "Direct", "Chat"], n, p=[0.4, 0.15, 0.3, 0.15])
    minutes = rng.gamma(2.0, 6.0, n).round(2)
    visits = rng.poisson(3, n).astype(float)
    logit = -2.5 + 0.1 * minutes + np.select([source == "Referral", source == "Chat"], [1.5, -0.8], 0.0) + 0.3 * visits
    converted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    right = rng.random(n) < 0.93
    status = np.where(converted == right, "Closed won", "Not interested")
    return pd.DataFrame(
        {
            "lead_id": [f"L-{i:05d}" for i in rng.permutation(n)],
            "converted": converted,
            "source": source,
            "status": status,
            "minutes": minutes,
            "visits": visits,
        }
    )


@pytest.fixture(scope="session")
def static_export():
    """`make_static_export`, as a fixture: call it with (n, seed)."""
    return make_static_export


# -- a real PostgreSQL server (tests/test_sources.py, tests/test_leadstore.py) ---------------------
def _postgres_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (initdb + pg_ctl) on a free port, as a non-root user."""
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    is_root = os.geteuid() == 0
    if initdb is None or pg_ctl is None:
        if is_root:
            pytest.fail("PostgreSQL is not installed: `make system-deps` installs it (make test runs it first)")
        pytest.skip("PostgreSQL is not installed and installing it needs root (make system-deps)")
    # PostgreSQL refuses to run as root: run it as the `postgres` user in a folder it owns.
    home = Path(tempfile.mkdtemp(prefix="leadscore-pg-"))
    prefix: list[str] = []
    if is_root:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(home, user="postgres")
    port = _free_port()
    data_dir, log = home / "data", home / "server.log"
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run([*prefix, initdb, "-D", str(data_dir), "-U", "leadscore", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                   check=True, capture_output=True, env=env)
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run([*prefix, pg_ctl, "-D", str(data_dir), "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
                             capture_output=True, env=env)
    if started.returncode != 0:
        detail = log.read_text() if log.exists() else started.stderr.decode()
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {detail}")
    try:
        yield f"postgresql+psycopg2://leadscore@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "stop"], capture_output=True, env=env)
        shutil.rmtree(home, ignore_errors=True)
