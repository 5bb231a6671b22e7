"""The Trigger resource (`eventbus.dev/v1alpha1`): one model for the Kubernetes CRD and local YAML files."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from schemas.duration import Delay, Duration, Lease, PositiveDelay, ShortDuration, Timeout
from schemas.names import pattern_matches as subject_matches
from schemas.names import reserved_reason

API_VERSION = "eventbus.dev/v1alpha1"
KIND = "Trigger"

NonEmptyStr = Annotated[str, Field(min_length=1)]
"""A list element that must not be empty (a topic, a server address)."""

_CE_ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,20}$")


class Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields rejected (typos must not pass)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# --- secrets and TLS -------------------------------------------------------------------------


class SecretKeyRef(Model):
    """One key of a Kubernetes Secret in the Trigger's own namespace (`eventbus run --kubernetes`)."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class SecretRef(Model):
    """Where a secret comes from (never inline in the spec): exactly one of an environment variable of the
    runtime (`env`) or a key of a Secret in the Trigger's namespace (`secretKeyRef`, Kubernetes mode).
    `env` stays a plain string ("" when unset) so code that reads an environment variable needs no
    change: the Kubernetes controller resolves a `secretKeyRef` into a private variable before a run."""

    env: str = ""
    secret_key_ref: SecretKeyRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env == "") == (self.secret_key_ref is None):
            raise ValueError("set exactly one of env, secretKeyRef")
        return self


class Tls(Model):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


class Sasl(Model):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    username: str = Field(min_length=1)
    password_from: SecretRef


# --- sources ---------------------------------------------------------------------------------


class KafkaSource(Model):
    bootstrap_servers: list[NonEmptyStr] = Field(default_factory=list)
    topics: list[NonEmptyStr] = Field(min_length=1)
    consumer_group: str | None = None
    initial_offset: Literal["earliest", "latest"] = "earliest"
    ordering: Literal["partition", "key", "none"] = "partition"
    sasl: Sasl | None = None
    tls: Tls | None = None

    def group_for(self, trigger_key: str) -> str:
        """`consumerGroup`, or by default `eventbus-<namespace>-<name>` for trigger `<namespace>/<name>`."""
        if self.consumer_group is not None:
            return self.consumer_group
        return "eventbus-" + trigger_key.replace("/", "-")


class JetStream(Model):
    stream: str = Field(min_length=1)
    durable: str | None = None
    deliver_policy: Literal["all", "new", "last"] = "all"
    ack_wait: PositiveDelay | None = None
    max_deliver: int = Field(default=-1, ge=-1)
    create_stream: bool = False


class NatsSource(Model):
    servers: list[NonEmptyStr] = Field(default_factory=list)
    subject: str = Field(min_length=1)
    queue_group: str | None = None
    jetstream: JetStream | None = None
    ordering: Literal["partition", "key", "none"] = "partition"
    creds_file: str | None = None
    token_from: SecretRef | None = None
    user: str | None = None
    password_from: SecretRef | None = None
    tls: Tls | None = None
    nkey_seed_file: str | None = Field(default=None, min_length=1,
                                       description="A file holding the NATS user's nkey seed (`SU...`).")

    @model_validator(mode="after")
    def _auth(self) -> NatsSource:
        _check_nats_auth(self.creds_file, self.token_from, self.user, self.password_from, self.nkey_seed_file)
        return self


class DeprecatedField(UserWarning):
    """A field loaded under its old name; the loader reports it with the file and document."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(f"{old} is deprecated: write {new}")
        self.old, self.new = old, new


def _check_nats_auth(creds_file: str | None, token_from: SecretRef | None, user: str | None,
                     password_from: SecretRef | None, nkey_seed_file: str | None) -> None:
    """At most one way to authenticate to NATS (sources and sinks alike)."""
    ways = [n for n, v in (("credsFile", creds_file), ("tokenFrom", token_from), ("user", user),
                           ("nkeySeedFile", nkey_seed_file)) if v is not None]
    if len(ways) > 1:
        raise ValueError(f"set at most one of credsFile, tokenFrom, user, nkeySeedFile (found: {', '.join(ways)})")
    if password_from is not None and user is None:
        raise ValueError("passwordFrom needs user")


class CatchUp(Model):
    max_ticks: int = Field(default=1, ge=0)


class CronSource(Model):
    schedule: str = Field(min_length=1)
    timezone: str = Field(default="UTC", alias="timeZone",
                          description="IANA time zone of the schedule (as in a Kubernetes CronJob).")
    data: Any = None
    data_base64: str | None = None
    content_type: str | None = None
    jitter: ShortDuration = 0.0
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    starting_deadline: Delay | None = None
    catch_up: CatchUp | None = None
    suspend: bool = False
    lease_duration: Lease = Field(
        default=10.0,
        description="How long a replica's scheduler lease lasts; a new leader takes over within it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _deprecated_timezone(cls, data: Any) -> Any:
        """`timezone` (before Kubernetes' CronJob spelling `timeZone` was adopted) still loads, with a warning."""
        if isinstance(data, dict) and "timezone" in data:
            import warnings

            data = dict(data)
            if "timeZone" in data:
                raise ValueError("set timeZone only (timezone is its deprecated spelling)")
            data["timeZone"] = data.pop("timezone")
            warnings.warn(DeprecatedField("timezone", "timeZone"), stacklevel=2)
        return data

    @model_validator(mode="after")
    def _check(self) -> CronSource:
        from schemas.cron import validate_schedule, validate_timezone

        validate_schedule(self.schedule)
        validate_timezone(self.timezone)
        if self.data is not None and self.data_base64 is not None:
            raise ValueError("set data or dataBase64, not both")
        if self.data_base64 is not None:
            try:
                base64.b64decode(self.data_base64, validate=True)
            except binascii.Error:
                raise ValueError("dataBase64 is not valid base64") from None
        return self


class HttpAuth(Model):
    bearer_token_from: SecretRef | None = None
    hmac: HmacAuth | None = None


class HmacAuth(Model):
    header: str = "X-Hub-Signature-256"
    secret_from: SecretRef | None = None
    secrets_from: list[SecretRef] | None = Field(
        default=None, min_length=1, max_length=8,
        description="Several secrets at once (rotation): any one valid signature passes (at most 8: the API "
                    "server bounds the cost of its validation rules).")
    algorithm: Literal["sha256", "sha1", "sha512"] = "sha256"
    timestamp_header: str | None = Field(
        default=None, min_length=1,
        description="Header with the Unix time of the delivery; the signature is then over `<timestamp>.<body>`, "
                    "stale deliveries are refused and replays answer 409.")
    tolerance: Annotated[Duration, Field(gt=0)] = 300.0

    @model_validator(mode="after")
    def _one_secret_source(self) -> HmacAuth:
        if (self.secret_from is None) == (self.secrets_from is None):
            raise ValueError("set exactly one of secretFrom, secretsFrom")
        return self


class HttpTopic(Model):
    """Where an `async` HTTP trigger parks events before delivery."""

    kafka: KafkaSink | None = None
    nats: NatsSink | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HttpTopic:
        if (self.kafka is None) == (self.nats is None):
            raise ValueError("exactly one of kafka, nats must be set")
        if self.nats is not None and self.nats.has_credentials:  # NatsSink's credentials serve sinks only
            raise ValueError("nats: credsFile, tokenFrom, user and tls are not supported on an async HTTP "
                             "topic (it uses the runtime's NATS connection)")
        if self.kafka is not None:
            bus, target = "kafka", self.kafka.topic
        else:
            assert self.nats is not None
            bus, target = "nats", self.nats.subject
        why = reserved_reason(target, bus=bus, internal=False)
        if why is not None:
            raise ValueError(f"{bus}: {target!r} is reserved ({why})")
        return self


class HttpSource(Model):
    path: str = Field(pattern=r"^/")
    mode: Literal["async", "sync"] = "sync"
    auth: HttpAuth | None = None
    topic: HttpTopic | None = None

    @model_validator(mode="after")
    def _topic_needs_async(self) -> HttpSource:
        if self.topic is not None and self.mode != "async":
            raise ValueError("topic is only used with mode: async")
        return self


class Source(Model):
    """Exactly one of the source kinds."""

    kafka: KafkaSource | None = None
    nats: NatsSource | None = None
    cron: CronSource | None = None
    http: HttpSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        set_ = [k for k in ("kafka", "nats", "cron", "http") if getattr(self, k) is not None]
        if len(set_) != 1:
            found = ", ".join(set_) if set_ else "none"
            raise ValueError(f"exactly one of kafka, nats, cron, http must be set (found: {found})")
        return self

    @property
    def kind(self) -> Literal["kafka", "nats", "cron", "http"]:
        kinds: tuple[Literal["kafka", "nats", "cron", "http"], ...] = ("kafka", "nats", "cron", "http")
        for k in kinds:
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated source has no kind")

    @property
    def summary(self) -> str:
        """One short line naming what is consumed (`kafka:orders`, `nats:orders.>`, `cron:@every 5m`,
        `http:/hooks/github`): the `Source` printer column of the CRD shows it from `status.source`."""
        if self.kafka is not None:
            return "kafka:" + ",".join(self.kafka.topics)
        if self.nats is not None:
            return "nats:" + self.nats.subject
        if self.cron is not None:
            return "cron:" + self.cron.schedule
        if self.http is not None:
            return "http:" + self.http.path
        raise AssertionError("validated source has no kind")


# --- sinks -----------------------------------------------------------------------------------


class KafkaSink(Model):
    """A Kafka topic to write to. With no `bootstrapServers` it is on the source's cluster (servers, `sasl`
    and `tls` of a Kafka source; `sasl`/`tls` given here win), else on the runtime's `--kafka` cluster."""

    topic: str = Field(min_length=1)
    bootstrap_servers: list[NonEmptyStr] = Field(default_factory=list)
    sasl: Sasl | None = None
    tls: Tls | None = None


class NatsSink(Model):
    """A NATS subject to write to. With no `servers` it is on the source's servers (with its credentials)
    when the source is NATS, else on the runtime's `--nats` servers; credentials given here win."""

    subject: str = Field(min_length=1)
    servers: list[NonEmptyStr] = Field(default_factory=list)
    creds_file: str | None = None
    token_from: SecretRef | None = None
    user: str | None = None
    password_from: SecretRef | None = None
    nkey_seed_file: str | None = Field(default=None, min_length=1,
                                       description="A file holding an NKey seed (SU...): nkey authentication.")
    tls: Tls | None = None

    @model_validator(mode="after")
    def _auth(self) -> NatsSink:
        _check_nats_auth(self.creds_file, self.token_from, self.user, self.password_from, self.nkey_seed_file)
        return self

    @property
    def has_credentials(self) -> bool:
        return any(v is not None for v in (self.creds_file, self.token_from, self.user, self.nkey_seed_file,
                                           self.tls))


class Sink(Model):
    """A destination for dead letters or replies: exactly one of kafka, nats, url."""

    kafka: KafkaSink | None = None
    nats: NatsSink | None = None
    url: str | None = Field(default=None, pattern=r"^https?://")

    @model_validator(mode="after")
    def _exactly_one(self) -> Sink:
        n = sum(x is not None for x in (self.kafka, self.nats, self.url))
        if n != 1:
            raise ValueError("exactly one of kafka, nats, url must be set")
        return self


# --- the rest of the spec --------------------------------------------------------------------


class EventDefaults(Model):
    """Attributes for raw (non-CloudEvents) payloads."""

    type: str | None = Field(default=None, min_length=1)
    source: str | None = Field(default=None, min_length=1)


class Filter(Model):
    attributes: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> Filter:
        bad = [k for k in self.attributes if not _CE_ATTRIBUTE_NAME.match(k)]
        if bad:
            raise ValueError(
                f"invalid CloudEvents attribute name {bad[0]!r}: use 1-20 lowercase letters and digits"
            )
        return self


class FunctionRef(Model):
    name: str | None = None
    namespace: str | None = None
    url: str | None = Field(default=None, pattern=r"^https?://")

    @model_validator(mode="after")
    def _name_or_url(self) -> FunctionRef:
        if (self.name is None) == (self.url is None):
            raise ValueError("set exactly one of name or url")
        if self.url is not None and self.namespace is not None:
            raise ValueError("namespace goes with name, not with url")
        return self


class Retry(Model):
    attempts: int = Field(default=3, ge=1, description="Total tries, the first included.")
    backoff: Literal["exponential", "linear"] = "exponential"
    delay: Delay = 0.2
    max_delay: Delay = 30.0

    @model_validator(mode="after")
    def _delays(self) -> Retry:
        if self.delay > self.max_delay:
            raise ValueError("delay must be <= maxDelay")
        return self


class Delivery(Model):
    timeout: Timeout = 30.0
    concurrency: int = Field(default=64, ge=1, le=10_000)
    mode: Literal["binary", "structured"] = "binary"
    retry: Retry = Field(default_factory=Retry)
    dead_letter: Sink | None = None
    reply: Sink | None = None

    @model_validator(mode="after")
    def _no_reserved_sinks(self) -> Delivery:
        """Dead letters and replies must not land on the broker's or eventbus's own subjects/topics."""
        for name, sink in (("deadLetter", self.dead_letter), ("reply", self.reply)):
            if sink is None:
                continue
            for kind, target in (("kafka.topic", sink.kafka.topic if sink.kafka else None),
                                 ("nats.subject", sink.nats.subject if sink.nats else None)):
                why = reserved_reason(target, bus=kind.split(".")[0]) if target is not None else None
                if why is not None:
                    raise ValueError(f"delivery.{name}.{kind}: {target!r} is reserved ({why})")
        return self


class Scaling(Model):
    """The scaling hint's knobs; defaults follow KEDA's Kafka scaler (lagThreshold 10, activation 0)."""

    lag_threshold: int = Field(default=10, ge=1)
    activation_lag_threshold: int = Field(default=0, ge=0)
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=50, ge=1)
    allow_idle_consumers: bool = Field(
        default=False, description="Kafka: allow more replicas than partitions (idle consumers).")
    max_backlog_age: Annotated[Duration, Field(gt=0)] | None = Field(
        default=None, description="One replica more while the oldest waiting event is older than this.")
    prewarm: Annotated[Duration, Field(gt=0)] | None = Field(
        default=None, description="Cron: active this long before each tick, until the tick settles.")
    push: Sink | None = Field(default=None, description="Where the dev.eventbus.scaling.hint CloudEvents go.")
    push_interval: Annotated[Duration, Field(gt=0)] = Field(
        default=1.0, description="At most one push per interval (a trigger turning active is pushed at once).")

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


class TriggerSpec(Model):
    source: Source
    event: EventDefaults = Field(default_factory=EventDefaults)
    filter: Filter = Field(default_factory=Filter)
    function: FunctionRef
    delivery: Delivery = Field(default_factory=Delivery)
    scaling: Scaling = Field(default_factory=Scaling)

    @model_validator(mode="after")
    def _no_sink_loops(self) -> TriggerSpec:
        """A dead-letter or reply sink that the trigger itself reads from would feed failures back forever."""
        for name, sink in (("deadLetter", self.delivery.dead_letter), ("reply", self.delivery.reply)):
            if sink is None:
                continue
            kafka, nats = self.source.kafka, self.source.nats
            if kafka is not None and sink.kafka is not None and sink.kafka.topic in kafka.topics:
                raise ValueError(f"delivery.{name}: topic {sink.kafka.topic!r} is also a source topic "
                                 "(events would loop back into this trigger)")
            if nats is not None and sink.nats is not None and subject_matches(nats.subject, sink.nats.subject):
                raise ValueError(f"delivery.{name}: subject {sink.nats.subject!r} is covered by the source "
                                 f"subject {nats.subject!r} (events would loop back into this trigger)")
        return self

    @model_validator(mode="after")
    def _prewarm_needs_cron(self) -> TriggerSpec:
        if self.scaling.prewarm is not None and self.source.cron is None:
            raise ValueError("scaling.prewarm is only used with a cron source")
        push, kafka, nats = self.scaling.push, self.source.kafka, self.source.nats
        if push is not None and kafka is not None and push.kafka is not None and push.kafka.topic in kafka.topics:
            raise ValueError(f"scaling.push: topic {push.kafka.topic!r} is also a source topic "
                             "(hints would feed back into this trigger)")
        if push is not None and nats is not None and push.nats is not None \
                and subject_matches(nats.subject, push.nats.subject):
            raise ValueError(f"scaling.push: subject {push.nats.subject!r} is covered by the source subject "
                             f"{nats.subject!r} (hints would feed back into this trigger)")
        return self


class Metadata(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str = Field(default="default", min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    generation: int | None = None
    resource_version: str | None = None
    uid: str | None = None


class Trigger(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)

    api_version: Literal["eventbus.dev/v1alpha1"]
    kind: Literal["Trigger"]
    metadata: Metadata
    spec: TriggerSpec

    @property
    def key(self) -> str:
        """`<namespace>/<name>`: how logs, metrics and dead letters name this trigger."""
        return f"{self.metadata.namespace}/{self.metadata.name}"


HttpAuth.model_rebuild()
HttpTopic.model_rebuild()
HttpSource.model_rebuild()
