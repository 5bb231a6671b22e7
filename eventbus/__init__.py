"""eventbus: the event layer of the FaaS platform (triggers from Kafka, NATS, cron and HTTP to functions)."""

from eventbus.producer import PublishError, build_event, publish, publish_event

__all__ = ["PublishError", "build_event", "publish", "publish_event"]
