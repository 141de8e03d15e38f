"""Batch scoring keeps the memory it frees for its next arrays (glibc's malloc settings).

A batch of 100,000 leads builds arrays of 100-200 MB (the snapshots' features, the model
matrix), frees them, and builds them again for the next batch or part. By default glibc's
malloc gives every allocation above 128 KiB its own mapping and returns it to the system when
freed; the next array then touches fresh pages. On a VM that hands freed pages back to its host
(free-page reporting, as on Firecracker), touching 176 MB of fresh pages cost 0.22-0.29 s
against 0.02 s for pages the process kept (`np.ones((293163, 75))` after a 3 s pause, this
project's benchmark machine), more than the model takes to score them. `keep_freed_memory`
raises the mapping and trimming thresholds, so freed arrays stay in the process's heap for the
next ones; resident memory then stays near its peak until the process ends, which suits a
scoring command.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from model.settings import load_settings

# glibc's mallopt parameters (malloc.h) and the values set.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 1 << 30  # arrays up to 1 GiB come from the heap
_TRIM_THRESHOLD_BYTES = 1 << 31  # free heap up to 2 GiB is kept


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for the next allocations; once per process.

    Returns:
        True when both settings took; False when `LEADSCORE_KEEP_FREED_MEMORY=0`
        (`model.settings`), or the C library is not glibc (macOS, musl), or it refused a
        setting (malloc stays as it was for what it refused).

    Raises:
        SettingsError: A `LEADSCORE_*` variable cannot be read, as for every command.
    """
    if not load_settings().keep_freed_memory:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # no C library to load, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))


@contextmanager
def heap_frozen() -> Iterator[None]:
    """The objects alive when the block starts (the model, its tables, the modules) left out of the
    garbage collector's passes until it ends (`gc.freeze`, then `gc.unfreeze`).

    Scoring a file of leads with reasons makes and drops millions of small objects; each full
    collection would walk the whole heap again. What the block makes is collected as usual. A
    heap frozen already (the service freezes its own after start-up) is left as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
