"""`model.memory.keep_freed_memory`: glibc's malloc keeps freed arrays for the next ones, unless told not to."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A child process each time: the setting is process-wide and cached, and the tests' own process keeps its defaults.
# It prints whether the setting took and the resident MB a freed 160 MB array leaves behind.
PROBE = """
import os, numpy as np
from model.memory import keep_freed_memory
kept = keep_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = rss_mb()
a = np.ones(20_000_000)
del a
print(kept, round(rss_mb() - before))
"""


def _run(env_value: str | None) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "LEADSCORE_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["LEADSCORE_KEEP_FREED_MEMORY"] = env_value
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True)
    kept, left_mb = done.stdout.split()
    return kept, float(left_mb)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc")
def test_batch_scoring_keeps_freed_memory_on_glibc() -> None:
    kept, left_mb = _run(None)
    assert kept == "True"
    assert left_mb > 100  # the freed array's pages stay with the process for the next one


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_zero_leaves_malloc_at_its_defaults() -> None:
    kept, left_mb = _run("0")
    assert kept == "False"
    assert left_mb < 50  # returned to the system when freed


FROZEN = """
import gc
from model.memory import heap_frozen
kept = [[] for _ in range(1000)]  # alive before the block
with heap_frozen():
    inside = gc.get_freeze_count()
    cycle = []
    cycle.append(cycle)
    del cycle
    collected = gc.collect()  # what the block made is still collected
    gc.freeze()
    with heap_frozen():  # frozen already: left as it is
        pass
    again = gc.get_freeze_count()
    gc.unfreeze()
print(inside >= 1000, collected >= 1, again >= inside, gc.get_freeze_count())
"""


def test_the_heap_alive_before_scoring_is_left_out_of_collections_until_it_ends() -> None:
    done = subprocess.run([sys.executable, "-c", FROZEN], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["True", "True", "True", "0"]
