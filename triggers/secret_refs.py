"""`secretKeyRef` secrets of a Trigger, resolved from Kubernetes Secrets in the Trigger's namespace.

The code that opens a connection reads a secret from an environment variable (`SecretRef.env`). So a
resolved `{secretKeyRef: {name, key}}` becomes `{env: EVENTBUS_SECRET_<hash>}`, a variable of this process
set to the Secret's value, and the rest of the runtime needs no Kubernetes knowledge. The variable name
is derived from namespace, Secret and key, so it is stable across restarts of a trigger.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterator
from typing import Any, Protocol

from pydantic import BaseModel

from schemas.trigger import SecretRef, Trigger


class SecretNotFound(LookupError):
    """A referenced Secret, or a key in it, does not exist (yet)."""

    def __init__(self, path: str, namespace: str, name: str, key: str, missing_key: bool) -> None:
        secret = f"Secret {namespace}/{name}"
        what = f"key {key!r} not in {secret}" if missing_key else f"{secret} not found"
        super().__init__(f"{path}.secretKeyRef: {what}")
        self.path = path


class SecretReader(Protocol):
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def secret_refs(model: BaseModel, path: str = "spec") -> Iterator[tuple[str, SecretRef]]:
    """Every `SecretRef` below `model`, with its camelCase field path (`spec.source.nats.passwordFrom`)."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        alias = info.alias or name
        if isinstance(value, SecretRef):
            yield f"{path}.{alias}", value
        elif isinstance(value, BaseModel):
            yield from secret_refs(value, f"{path}.{alias}")


def kubernetes_only(triggers: list[Trigger]) -> list[str]:
    """`<ns>/<name> <field>.secretKeyRef` for each Secret reference, which only `run --kubernetes` resolves."""
    return [f"{t.key} {path}.secretKeyRef: a Kubernetes Secret needs `eventbus run --kubernetes`; use {{env: VAR}}"
            for t in triggers for path, ref in secret_refs(t.spec) if ref.secret_key_ref is not None]


def env_name(namespace: str, name: str, key: str) -> str:
    digest = hashlib.sha256(f"{namespace}\0{name}\0{key}".encode()).hexdigest()[:16].upper()
    return f"EVENTBUS_SECRET_{digest}"


async def resolve_secrets(trigger: Trigger, reader: SecretReader) -> Trigger:
    """`trigger` with every `secretKeyRef` replaced by an environment variable holding its value.

    Raises SecretNotFound (naming the field) for the first Secret or key that does not exist."""
    refs = [(p, r) for p, r in secret_refs(trigger.spec) if r.secret_key_ref is not None]
    if not refs:
        return trigger
    ns = trigger.metadata.namespace
    doc = trigger.model_dump(by_alias=True, exclude_unset=True, mode="json")
    for path, ref in refs:
        skr = ref.secret_key_ref
        assert skr is not None
        secret = await reader.get_secret(ns, skr.name)
        if secret is None:
            raise SecretNotFound(path, ns, skr.name, skr.key, missing_key=False)
        data = secret.get("data") or {}
        string_data = secret.get("stringData") or {}
        if skr.key in data:
            try:
                value = base64.b64decode(data[skr.key]).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise SecretNotFound(path, ns, skr.name, skr.key, missing_key=True) from None
        elif skr.key in string_data:
            value = str(string_data[skr.key])
        else:
            raise SecretNotFound(path, ns, skr.name, skr.key, missing_key=True)
        var = env_name(ns, skr.name, skr.key)
        os.environ[var] = value
        node: dict[str, Any] = doc
        parts = path.split(".")[:-1]
        for part in parts:
            node = node[part]
        node[path.rsplit(".", 1)[1]] = {"env": var}
    return Trigger.model_validate(doc)
