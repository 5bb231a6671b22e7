"""A compare-and-swap store on a JetStream key-value bucket: where cron leases and tick ledgers live.

One bucket (`eventbus_cron` by default, history 1, file storage so the ledger survives a server restart),
one key per trigger (`<namespace>.<name>`). `create` and `update(last=revision)` are JetStream's own
optimistic concurrency (the `Nats-Expected-Last-Subject-Sequence` header), so two writers can never both
win. The lease expiry is stored in the value rather than as the bucket's max age: the ledger (last fired
tick) must outlive any lease, and an expired lease is taken over by an ordinary compare-and-swap.
`triggers.leader.CasLock` does the lease logic; this module is only the storage.
"""

from __future__ import annotations

import logging
import re

from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger("eventbus.nats.kv")

DEFAULT_BUCKET = "eventbus_cron"
_KEY_BAD = re.compile(r"[^-/_=.a-zA-Z0-9]")


def trigger_key(trigger_key: str) -> str:
    """The bucket key of trigger `<namespace>/<name>`: `<namespace>.<name>` (KV keys allow no `/` token
    separator; names are DNS-1123 so nothing else needs escaping, but be safe)."""
    return _KEY_BAD.sub("_", trigger_key.replace("/", "."))


class NatsKvStore:
    """`triggers.leader.CasStore` over one JetStream KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, nc: NatsClient, bucket: str = DEFAULT_BUCKET) -> NatsKvStore:
        """Bind to `bucket`, creating it (history 1, file storage) if it does not exist."""
        js = nc.jetstream()
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE,
                                                          description="eventbus cron leases and tick ledgers"))
        return cls(kv)

    async def get(self, key: str) -> tuple[bytes, int] | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:  # KeyDeletedError is a subclass
            return None
        if entry.value is None or entry.revision is None:
            return None
        return entry.value, entry.revision

    async def create(self, key: str, value: bytes) -> int | None:
        try:
            return int(await self.kv.create(key, value))
        except KeyWrongLastSequenceError:
            return None

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        try:
            return int(await self.kv.update(key, value, last=revision))
        except KeyWrongLastSequenceError:
            return None
