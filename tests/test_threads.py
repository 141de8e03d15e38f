"""Big batches run in row ranges on every core (`features.threads`) and give the values of one call, to the bit."""

from __future__ import annotations

import os
import threading
import time

import lightgbm as lgb
import numpy as np
import pytest

from features.engine import behaviour_matrix, build_event_index
from features.spec import FeatureSpec
from features.threads import PARALLEL_MIN_ROWS, row_ranges, run_ranges
from model.treeshap import ExactContributions

AS_OF = 1_730_000_000
DAY = 86_400
N_ROWS = PARALLEL_MIN_ROWS + 5_001  # several ranges on a machine of two cores or more
PIECE = PARALLEL_MIN_ROWS // 4  # each piece alone runs in one call


def _pieces(call, n: int) -> np.ndarray:
    return np.vstack([call(start, min(start + PIECE, n)) for start in range(0, n, PIECE)])


def test_ranges_cover_the_rows_once_in_order() -> None:
    assert row_ranges(PARALLEL_MIN_ROWS - 1) == [(0, PARALLEL_MIN_ROWS - 1)]
    ranges = row_ranges(N_ROWS)
    assert ranges[0][0] == 0 and ranges[-1][1] == N_ROWS
    assert all(stop == start for (_a, stop), (start, _b) in zip(ranges, ranges[1:], strict=False))
    assert len(ranges) == min(os.cpu_count() or 1, N_ROWS // (PARALLEL_MIN_ROWS // 2))


def test_an_error_in_a_range_is_raised() -> None:
    def call(start: int, stop: int) -> None:
        if start > 0:
            raise ValueError(f"range {start}..{stop}")

    if len(row_ranges(N_ROWS)) == 1:
        pytest.skip("one core: a single range")
    with pytest.raises(ValueError, match="range"):
        run_ranges(call, N_ROWS)


def test_behaviour_features_of_a_big_batch_equal_those_of_its_pieces() -> None:
    rng = np.random.default_rng(5)
    spec = FeatureSpec(email_column=None, interaction_types=["page_view", "demo_request", "email_open"], windows_days=[7, 30])
    n_leads, n_events = 2_000, 40_000
    index = build_event_index(
        rng.integers(0, n_leads, n_events), AS_OF - rng.integers(0, 200 * DAY, n_events), rng.integers(0, 4, n_events),
        n_leads=n_leads, n_slots=4,
    )  # fmt: skip
    leads = rng.integers(0, n_leads, N_ROWS)
    as_of = AS_OF - rng.integers(0, 100 * DAY, N_ROWS)
    created = as_of - rng.integers(0, 300 * DAY, N_ROWS)

    whole = behaviour_matrix(index, leads, as_of, created, spec)
    pieces = _pieces(lambda a, b: behaviour_matrix(index, leads[a:b], as_of[a:b], created[a:b], spec), N_ROWS)

    assert whole.shape == pieces.shape and np.array_equal(whole, pieces, equal_nan=True)


def test_contributions_of_a_big_batch_equal_those_of_its_pieces() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4_000, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + rng.normal(size=len(x)) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7, "max_depth": 3, "num_threads": 1}, lgb.Dataset(x, y), 60)
    exact = ExactContributions.from_booster(booster)
    rows = rng.normal(size=(N_ROWS, 6))
    rows[rng.random(rows.shape) < 0.1] = np.nan
    groups = np.array([0, 0, 1, 1, 1, 0])

    assert np.array_equal(exact.contributions(rows), _pieces(lambda a, b: exact.contributions(rows[a:b]), N_ROWS))
    assert np.array_equal(exact.group_sums(rows, groups, 2), _pieces(lambda a, b: exact.group_sums(rows[a:b], groups, 2), N_ROWS))


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2, reason="needs fork and two cores")
def test_a_forked_child_runs_its_ranges_on_a_pool_of_its_own() -> None:
    ranges = row_ranges(N_ROWS)
    together = threading.Barrier(len(ranges), timeout=10)  # every range at once: the pool starts all its threads
    run_ranges(lambda start, stop: together.wait(), N_ROWS)
    pid = os.fork()
    if pid == 0:  # the child: with the parent's pool its ranges would wait forever
        done: list[int] = []
        run_ranges(lambda start, stop: done.append(stop - start), N_ROWS)
        os._exit(0 if sum(done) == N_ROWS else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the forked child's ranges never ran")
