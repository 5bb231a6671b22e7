"""Trigger specs for the commands: load a file or folder, or print every problem and say so."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from schemas.errors import TriggerSpecError
from schemas.loader import YAML_SUFFIXES, load_triggers
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


QUICKSTART_TRIGGERS = Path("examples/quickstart/triggers")
QUICKSTART_FUNCTIONS = Path("examples/quickstart/functions.py")


def _yaml_files(folder: Path) -> list[Path]:
    return [f for f in folder.rglob("*") if f.suffix in YAML_SUFFIXES and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)]


def load_some(path: str) -> list[Trigger]:
    """The triggers under `path`; none at all is a failure naming the path (TriggerSpecError for bad YAML)."""
    from eventbus.failures import CliFailure

    triggers = load_triggers(path)
    if triggers:
        return triggers
    where = Path(path)
    if where.is_dir():
        why = (f"{path} holds no .yaml or .yml file" if not _yaml_files(where)
               else f"the YAML files under {path} hold no Trigger")
    else:
        why = f"{path} holds no Trigger document"
    raise CliFailure(f"no Trigger found in {path}", why,
                     "point -f at Trigger YAML, e.g. -f examples/quickstart/triggers")


def default_up_path() -> tuple[str, str | None]:
    """`eventbus up` without -f: ./triggers when it holds YAML (it is not the Python package of that name),
    else the quick start's triggers, with its functions file when present."""
    from eventbus.failures import CliFailure

    local = Path("triggers")
    if local.is_dir() and _yaml_files(local):
        return str(local), None
    if QUICKSTART_TRIGGERS.is_dir():
        functions = str(QUICKSTART_FUNCTIONS) if QUICKSTART_FUNCTIONS.is_file() else None
        return str(QUICKSTART_TRIGGERS), functions
    raise CliFailure("no Trigger found", f"neither ./triggers nor ./{QUICKSTART_TRIGGERS} holds Trigger YAML",
                     "pass -f PATH")


def sink_problems(triggers: list[Trigger]) -> list[str]:
    """Sinks that reach no cluster with the defaults this process knows (EVENTBUS_KAFKA_BOOTSTRAP,
    EVENTBUS_NATS_URL; `validate` cannot know a later `run --kafka`, so the message states the rule)."""
    from connectors.kafka import BOOTSTRAP_ENV
    from connectors.nats_client import NATS_URL_ENV
    from schemas.sink_cluster import check_sink_clusters

    kafka = os.environ.get(BOOTSTRAP_ENV) or None
    nats = [s.strip() for s in os.environ.get(NATS_URL_ENV, "").split(",") if s.strip()]
    return [str(p) for t in triggers for p in check_sink_clusters(t, kafka_default=kafka, nats_default=nats)]
