"""The process settings `eventbus run` applies before its loop starts (each case in a fresh interpreter:
the collector's settings are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import gc, json
from eventbus.loop import run

async def main():
    return {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}

print(json.dumps(run(main())))
"""


def probe(**env: str) -> dict[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env={**clean, **env}, capture_output=True,
                         text=True, timeout=60, check=True)
    found: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def test_the_loop_runs_with_a_frozen_start_up_and_pythons_thresholds() -> None:
    seen = probe()
    assert seen["threshold"] == 700  # a higher one let a backlog's garbage pile up (see tune_gc)
    assert seen["frozen"] > 0  # what was imported before the loop: out of every later collection's way


def test_eventbus_gc_default_keeps_pythons_settings() -> None:
    seen = probe(EVENTBUS_GC="default")
    assert seen["threshold"] == 700 and seen["frozen"] == 0
