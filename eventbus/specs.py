"""Trigger specs for the commands: load a file or folder, or print every problem and say so."""

from __future__ import annotations

import os
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


def sink_problems(triggers: list[Trigger]) -> list[str]:
    """Sinks that reach no cluster with the defaults this process knows (EVENTBUS_KAFKA_BOOTSTRAP,
    EVENTBUS_NATS_URL; `validate` cannot know a later `run --kafka`, so the message states the rule)."""
    from connectors.kafka import BOOTSTRAP_ENV
    from connectors.nats_client import NATS_URL_ENV
    from schemas.sink_cluster import check_sink_clusters

    kafka = os.environ.get(BOOTSTRAP_ENV) or None
    nats = [s.strip() for s in os.environ.get(NATS_URL_ENV, "").split(",") if s.strip()]
    return [str(p) for t in triggers for p in check_sink_clusters(t, kafka_default=kafka, nats_default=nats)]
