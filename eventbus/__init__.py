"""eventbus: the event layer of the FaaS platform (triggers from Kafka, NATS, cron and HTTP to functions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus.producer import PublishError, build_event, publish, publish_event

__all__ = ["PublishError", "build_event", "publish", "publish_event"]


def __getattr__(name: str) -> Any:
    """The producer API, imported on first use: `eventbus run` must reach its signal handlers quickly."""
    if name in __all__:
        from eventbus import producer

        return getattr(producer, name)
    raise AttributeError(f"module 'eventbus' has no attribute {name!r}")
