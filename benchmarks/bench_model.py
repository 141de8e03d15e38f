"""The model the scoring benchmarks use: the default config trained on simulated leads."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import Dataset
from features.spec import FeatureSpec
from features.vocabulary import INTERACTION_TYPES
from sources.folder import load_dataset
from sources.grids import load_grid
from training.config import ProjectConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GRID = "default"  # the grid leadscore ships (sources/builtin_grids/default.yaml)
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)
Oracle = Callable[[pd.DataFrame, float], np.ndarray]


def simulated_data(n_leads: int, seed: int = 11) -> Path:
    """Folder of `n_leads` simulated leads (`simulator.funnel`), written once and cached."""
    import simulator.funnel as simulator
    from benchmarks.synthetic import CACHE_DIR
    from model.bundle import content_hash
    from simulator.funnel import simulate, write_simulation

    # The simulator is still being tuned: its source hash keeps stale cached data out.
    version = content_hash(Path(simulator.__file__).read_bytes())[:8]
    data_dir = CACHE_DIR / f"sim-{n_leads}-{seed}-{version}"
    if not (data_dir / "leads.csv").exists():
        write_simulation(simulate(n_leads, seed=seed), data_dir)
    return data_dir


def simulated_with_oracle(n_leads: int, seed: int, spec: FeatureSpec) -> tuple[Dataset, Oracle]:
    """`n_leads` simulated leads (`simulator.funnel`, not cached) read as `leadscore train` reads them, and their oracle.

    Returns:
        (the validated data set, `(snapshots[lead_id, as_of], days) -> ` the simulator's exact
        probability that each snapshot's lead converts within `days`, the truth no export holds).
    """
    data, oracle, _present = simulated_with_oracles(n_leads, seed, spec)
    return data, oracle


def simulated_with_oracles(n_leads: int, seed: int, spec: FeatureSpec) -> tuple[Dataset, Oracle, Oracle]:
    """As `simulated_with_oracle`, with the oracle that knows the present but not the future.

    Returns:
        (data set, full oracle, present oracle: `simulator.funnel.present_conversion_probability`).
    """
    from simulator.funnel import (
        present_conversion_probability,
        read_truth,
        simulate,
        true_conversion_probability,
        write_simulation,
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_simulation(simulate(n_leads, seed=seed), folder)
        data = load_dataset(folder, spec)
        truth = read_truth(folder / "truth.csv")

    def oracle(snapshots: pd.DataFrame, days: float) -> np.ndarray:
        return np.asarray(true_conversion_probability(truth, snapshots["lead_id"].to_numpy(), snapshots["as_of"], days))

    def present(snapshots: pd.DataFrame, days: float) -> np.ndarray:
        return present_conversion_probability(truth, snapshots["lead_id"].to_numpy(), snapshots["as_of"], days, seed=seed)

    return data, oracle, present


def train_bench_bundle(workdir: Path, n_leads: int, seed: int = 11) -> Path:
    """Train the default config on `n_leads` simulated leads, save the bundle; returns its folder.

    The bundle is what `leadscore train` would give on that data: the number of trees is the
    one early stopping picks under the default config, which is what scoring pays for.
    """
    from training.pipeline import run_training

    data_dir = simulated_data(n_leads, seed)
    config = ProjectConfig()
    config.training.n_bootstrap = 0
    dataset = load_dataset(data_dir, config.features)
    result = run_training(dataset, config.features, config.training, load_grid(DEFAULT_GRID))
    return result.model.save(workdir / f"bundle-{n_leads}-{seed}")


# Every attribute of the simulator's feature spec (`simulator.funnel`), as a CRM sends them.
EXAMPLE_ATTRIBUTES: dict[str, Any] = {
    "email": "jane.doe@acme-robotics.com",
    "industry": "software",
    "company_size": "50-199",
    "employee_count": 120,
    "country": "FR",
    "job_role": "marketing",
    "seniority": "director",
    "source": "referral",
    "marketing_consent": "yes",
}


def example_lead(
    lead_id: str, created_at: str, interactions: Iterable[Mapping[str, str]], /, **changes: Any
) -> dict[str, Any]:
    """The body of one lead as a CRM sends it to the service, with `EXAMPLE_ATTRIBUTES`.

    The benchmarks and the service tests build their requests with it, so that they all send
    the lead the model's feature spec expects.

    Args:
        lead_id: The lead's id.
        created_at: When the lead was created, ISO 8601 text.
        interactions: Its interactions (`type`, `occurred_at` and optionally `channel`).
        **changes: Top-level fields to replace or add, any of the above included (the
            arguments before them are positional only so that a test may pass, say,
            `created_at="last tuesday"` here).

    Returns:
        A new dict, its attributes and interactions copied: a caller may change it freely.
    """
    lead: dict[str, Any] = {
        "lead_id": lead_id,
        "created_at": created_at,
        "attributes": dict(EXAMPLE_ATTRIBUTES),
        "interactions": [dict(event) for event in interactions],
    }
    lead.update(changes)
    return lead


def lead_payload(n_interactions: int = 100, seed: int = 0, as_of: datetime = AS_OF) -> dict[str, Any]:
    """A lead as a CRM sends it, with `n_interactions` interactions over its last 120 days."""
    rng = np.random.default_rng(seed)
    created = as_of - timedelta(days=120)
    offsets = np.sort(rng.integers(0, 120 * 86_400, n_interactions))
    types = rng.choice(INTERACTION_TYPES, n_interactions)
    interactions = [
        {"type": str(t), "occurred_at": (created + timedelta(seconds=int(s))).isoformat(), "channel": "web"}
        for s, t in zip(offsets, types, strict=True)
    ]
    return example_lead(f"bench-{seed}", created.isoformat(), interactions)
