"""A compare-and-swap store on `coordination.k8s.io/v1` Leases: cron leases and the status writer's lease
when eventbus runs on Kubernetes.

One Lease per key. The value (`triggers.leader.CasLock`'s JSON record: holder, expiry, tick ledger) is
kept in the annotation `eventbus.dev/lock`, and the Lease's `resourceVersion` is the revision: `create`
answers 409 if the Lease exists and `replace` answers 409 if the resourceVersion is stale, so two replicas
can never both win a write, exactly like the NATS KV store (`connectors.nats_kv_lock`). The holder and
expiry are mirrored into `spec.holderIdentity` / `renewTime` / `leaseDurationSeconds`, so
`kubectl get lease` shows who schedules what.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from connectors.kube import KubeClient

ANNOTATION = "eventbus.dev/lock"
_NAME_BAD = re.compile(r"[^-a-z0-9.]")


def lease_name(prefix: str, name: str) -> str:
    """`<prefix>-<name>`, a valid object name (at most 253 characters; a hash keeps long names unique)."""
    full = _NAME_BAD.sub("-", f"{prefix}-{name}".lower())
    if len(full) <= 253:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[:242]}-{digest}"


def _micro(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseStore:
    """`triggers.leader.CasStore` over Leases in one namespace (keys are Lease names)."""

    def __init__(self, kube: KubeClient, namespace: str, *, labels: dict[str, str] | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.labels = labels or {"app.kubernetes.io/managed-by": "eventbus"}

    async def get(self, key: str) -> tuple[bytes, int] | None:
        lease = await self.kube.get_lease(self.namespace, key)
        if lease is None:
            return None
        raw = (lease.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
        if raw is None:
            raw = "{}"  # a Lease someone else made: take it over like an empty record
        return raw.encode(), int(lease["metadata"]["resourceVersion"])

    async def create(self, key: str, value: bytes) -> int | None:
        lease = await self.kube.create_lease(self.namespace, self._body(key, value, None))
        return None if lease is None else int(lease["metadata"]["resourceVersion"])

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        lease = await self.kube.replace_lease(self.namespace, key, self._body(key, value, revision))
        return None if lease is None else int(lease["metadata"]["resourceVersion"])

    def _body(self, key: str, value: bytes, revision: int | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": key, "namespace": self.namespace, "labels": self.labels,
                                "annotations": {ANNOTATION: value.decode()}}
        if revision is not None:
            meta["resourceVersion"] = str(revision)
        spec: dict[str, Any] = {}
        try:
            record = json.loads(value)
        except ValueError:
            record = {}
        holder, expires = record.get("holder"), float(record.get("expires") or 0.0)
        if holder:
            now = time.time()
            spec = {"holderIdentity": holder, "renewTime": _micro(now),
                    "leaseDurationSeconds": max(1, round(expires - now))}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
