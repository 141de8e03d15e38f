"""Timing, memory and result records shared by the benchmarks.

Every figure is the median of several runs and travels with a bare baseline measured in the
same run (same process, same moment), so that the ratio still means something on a busy,
shared machine where the absolute figure does not.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1


@dataclass
class Figure:
    """One benchmark figure beside its bare baseline.

    Attributes:
        name: What was measured, e.g. "one lead, score + top-5 reasons, in-process".
        metric: Which statistic, e.g. "p50", "p99", "throughput", "wall time", "peak RSS".
        unit: "ms", "s", "leads/s", "MB", ...
        value: The figure (median over runs).
        baseline_name: The bare operation it is compared with.
        baseline: The baseline's figure, same unit and statistic, same run.
        ratio: How many times the bare baseline the figure costs (>1 = slower or bigger;
            for throughputs, baseline / value, so >1 still means "costs more than bare").
        runs: How many runs the median is over.
        target: The target in words ("<= 2 ms"), or "" when there is none.
        met: Whether the target is met; None without a target.
        note: Anything a reader needs to read the figure right.
    """

    name: str
    metric: str
    unit: str
    value: float
    baseline_name: str
    baseline: float
    ratio: float
    runs: int
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Section:
    """The figures of one benchmark (one JSON file in `benchmarks/results`)."""

    section: str
    title: str
    quick: bool
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)

    def add(
        self,
        name: str,
        metric: str,
        unit: str,
        value: float,
        baseline_name: str,
        baseline: float,
        runs: int,
        *,
        target: str = "",
        limit: float | None = None,
        note: str = "",
    ) -> Figure:
        """Record a figure; `limit` (in `unit`) decides `met` for the target.

        A rate (a unit ending in "/s") is better higher; anything else is better lower.
        """
        higher_is_better = unit.endswith("/s")
        ratio = baseline / value if higher_is_better else value / baseline
        met = None if limit is None else (value >= limit if higher_is_better else value <= limit)
        figure = Figure(name, metric, unit, float(value), baseline_name, float(baseline), float(ratio), runs,
                        target, met, note)
        self.figures.append(figure)
        return figure

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.section}.json"
        payload = {"schema": SCHEMA_VERSION, "machine": machine(), **asdict(self)}
        path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
        return path


def machine() -> dict[str, object]:
    """What the figures were measured on, including how busy the machine was."""
    import lightgbm
    import pandas

    load1, load5, load15 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "lightgbm": lightgbm.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def time_calls(fn: Callable[[], object], calls: int, warmup: int = 10) -> np.ndarray:
    """Wall time of each of `calls` calls, in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(calls)
    clock = time.perf_counter
    for i in range(calls):
        start = clock()
        fn()
        out[i] = clock() - start
    return out * 1e3


def interleaved(fns: dict[str, Callable[[], object]], calls: int, warmup: int = 10) -> dict[str, np.ndarray]:
    """Per-call times (ms) of several operations, interleaved call by call.

    Interleaving puts a figure and its baseline under the same machine load, moment by moment.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {name: np.empty(calls) for name in fns}
    clock = time.perf_counter
    for i in range(calls):
        for name, fn in fns.items():
            start = clock()
            fn()
            out[name][i] = clock() - start
    return {name: times * 1e3 for name, times in out.items()}


def alternated(figure: Callable[[], object], baseline: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall time (s) of `figure` and of `baseline`, run one after the other `runs` times.

    Alternating run by run puts a long figure and its baseline under the same machine load.
    """
    ours, bare = np.empty(runs), np.empty(runs)
    clock = time.perf_counter
    for i in range(runs):
        start = clock()
        figure()
        ours[i] = clock() - start
        start = clock()
        baseline()
        bare[i] = clock() - start
    return float(np.median(ours)), float(np.median(bare))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
