"""Row ranges of a big batch computed on every core by the compiled kernels, which release the GIL.

The kernels (`features.engine`'s behaviour kernel, `model.treeshap`'s tables) are compiled with
`nogil=True` and compute each row on its own, so that cutting a batch into ranges and running
them in threads gives the same values to the bit as one call (tests/test_threads.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

PARALLEL_MIN_ROWS = 20_000
"""Batches below this run in one call: a thread's start costs more than their rows."""


def row_ranges(n_rows: int, min_rows: int = PARALLEL_MIN_ROWS) -> list[tuple[int, int]]:
    """`[start, stop)` ranges covering `n_rows` rows: one per core for a big batch, one for a small one.

    Args:
        n_rows: Rows of the batch.
        min_rows: Fewest rows worth a range of their own.
    """
    if n_rows < min_rows:  # first: `os.cpu_count` takes about 15 µs here, as much as a small kernel call
        return [(0, n_rows)]
    parts = max(1, min(_cores(), n_rows // max(min_rows // 2, 1)))
    bounds = [n_rows * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def run_ranges(call: Callable[[int, int], None], n_rows: int, min_rows: int = PARALLEL_MIN_ROWS) -> None:
    """Run `call(start, stop)` on each range of `row_ranges(n_rows)`, in threads when there are several.

    `call` must release the GIL to gain anything (a numba kernel compiled with `nogil=True`) and
    must write only its own rows. An exception in any range is raised here.
    """
    ranges = row_ranges(n_rows, min_rows)
    if len(ranges) == 1:
        call(*ranges[0])
        return
    for future in [_pool().submit(call, start, stop) for start, stop in ranges]:
        future.result()


@lru_cache(maxsize=1)
def _cores() -> int:
    return os.cpu_count() or 1


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_cores(), thread_name_prefix="leadscore-rows")


# A forked child has the parent's pool object but none of its threads: work sent to it would never
# run. The child makes a pool of its own on first use.
os.register_at_fork(after_in_child=_pool.cache_clear)
