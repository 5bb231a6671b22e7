"""Trigger specs for the commands: load a file or folder, or print every problem and say so."""

from __future__ import annotations

import sys

from schemas.errors import TriggerSpecError
from schemas.loader import load_triggers
from schemas.trigger import Trigger


def load_or_report(path: str) -> list[Trigger] | None:
    """The triggers under `path`, or None after printing each problem (`file#doc field: problem`) to stderr."""
    try:
        return load_triggers(path)
    except TriggerSpecError as exc:
        print(str(exc), file=sys.stderr)
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
    return None
