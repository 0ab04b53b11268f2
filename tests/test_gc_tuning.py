"""`serve` freezes what start-up made before it runs (bot.app.tune_gc), in its own process."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from bot.app import tune_gc
made_at_start_up = [[] for _ in range(1000)]
tune_gc()
print(gc.get_freeze_count() >= 1000, gc.get_count()[0] < 100)
"""


def test_tune_gc_freezes_what_start_up_made() -> None:
    # In a child: freezing the test process would keep every test's garbage.
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["True", "True"]
