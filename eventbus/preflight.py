"""Checks before any trigger starts: every secret the triggers name (`...From: {env: NAME}`) is set, and
every trigger has a broker address.

Why up front: a missing variable found while starting the third trigger used to stop the first two again
and name no trigger; checked here, the message names the trigger and the field, and nothing has started.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import BaseModel

from schemas.trigger import SecretRef, Trigger


@dataclass(frozen=True)
class MissingSecret:
    """A secret reference whose environment variable is unset or empty."""

    trigger: str  # `<namespace>/<name>`
    field: str  # `spec.source.http.auth.bearerTokenFrom.env`
    env: str

    def __str__(self) -> str:
        return f"trigger {self.trigger}: {self.field}: environment variable {self.env} is not set"


class MissingSecrets(RuntimeError):
    """Triggers name secrets the environment does not hold; `missing` lists each one."""

    def __init__(self, missing: list[MissingSecret]) -> None:
        super().__init__("; ".join(str(m) for m in missing))
        self.missing = missing


def secret_refs(model: BaseModel, path: str = "") -> Iterator[tuple[str, SecretRef]]:
    """(camelCase field path, reference) for every SecretRef inside `model`."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        here = f"{path}.{info.alias or name}" if path else (info.alias or name)
        items = value if isinstance(value, list | tuple) else [value]
        for i, item in enumerate(items):
            where = f"{here}[{i}]" if isinstance(value, list | tuple) else here
            if isinstance(item, SecretRef):
                yield f"{where}.env", item
            elif isinstance(item, BaseModel):
                yield from secret_refs(item, where)


def missing_secrets(triggers: list[Trigger]) -> list[MissingSecret]:
    """The secret references of `triggers` whose variable is unset or empty in this process's environment."""
    return [MissingSecret(t.key, field, ref.env)
            for t in triggers for field, ref in secret_refs(t.spec, "spec")
            if not os.environ.get(ref.env)]


def require_secrets(triggers: list[Trigger]) -> None:
    """Raise MissingSecrets naming every trigger whose secrets are not in the environment."""
    missing = missing_secrets(triggers)
    if missing:
        raise MissingSecrets(missing)


class NoBroker(RuntimeError):
    """A trigger names no servers and the runtime has no default for its broker."""

    def __init__(self, trigger: str, broker: str, flag: str, env: str) -> None:
        super().__init__(f"trigger {trigger}: no {broker} servers")
        self.trigger, self.broker, self.flag, self.env = trigger, broker, flag, env


def require_brokers(triggers: list[Trigger], *, kafka: str | None, nats: str | None) -> None:
    """Raise NoBroker for the first trigger whose source has no servers and no runtime default."""
    from connectors.kafka import BOOTSTRAP_ENV
    from connectors.nats_client import NATS_URL_ENV

    has_kafka = bool(kafka or os.environ.get(BOOTSTRAP_ENV))
    has_nats = bool(nats or os.environ.get(NATS_URL_ENV))
    for t in triggers:
        src = t.spec.source
        if src.kafka is not None and not src.kafka.bootstrap_servers and not has_kafka:
            raise NoBroker(t.key, "Kafka", "--kafka HOST:PORT", BOOTSTRAP_ENV)
        if src.nats is not None and not src.nats.servers and not has_nats:
            raise NoBroker(t.key, "NATS", "--nats URL", NATS_URL_ENV)
