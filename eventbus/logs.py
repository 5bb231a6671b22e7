"""Logging setup: human text by default, one JSON object a line with `--log-format json`."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


_NORMAL: dict[str, re.Pattern[str]] = {
    # a fresh broker or group: the coordinator is elected a moment after the first request
    "aiokafka": re.compile(
        r"GroupCoordinatorNotAvailable|CoordinatorNotAvailable|NotCoordinator|CoordinatorLoadInProgress"
        r"|Group Coordinator Request failed|Group Coordinator is not available"
        # metadata retries while a topic is created or a leader elected; an unreachable broker is reported
        # by eventbus itself, once, naming the address
        r"|Unable to update metadata|Unable connect to|not found in cluster metadata|LeaderNotAvailable"
        r"|NotLeaderForPartition|NotLeaderOrFollower|OffsetFetchRequest -- unknown topic"
        r"|Heartbeat failed for group .* because it is rebalancing|RebalanceInProgress"
    ),
    # nats-py's reconnect chatter; eventbus logs disconnects and reconnects itself
    "nats": re.compile(r"encountered error|Connection refused|nats: reconnecting"),
}


_REFUSED = re.compile(r"ConnectionRefusedError|Connect call failed|UnexpectedEOF|StaleConnection")


class NormalClientNoise(logging.Filter):
    """Client-library lines that are normal on a healthy system are kept at debug (shown with --log-level
    debug only), so an ERROR in the log means something is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return True
        if not self._normal(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = None
        return logging.getLogger().isEnabledFor(logging.DEBUG)

    @staticmethod
    def _normal(record: logging.LogRecord) -> bool:
        if record.name == "eventbus.nats" and record.getMessage() == "NATS error":
            # each refused (re)connect attempt: the runtime reports the unreachable server once per try,
            # naming it, and a lost connection is logged as "NATS disconnected"
            return bool(_REFUSED.search(str(getattr(record, "error", ""))))
        pattern = _NORMAL.get(record.name.split(".", 1)[0])
        return pattern is not None and bool(pattern.search(record.getMessage()))


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(NormalClientNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # aiokafka logs "Topic X not found in cluster metadata" at ERROR on every metadata retry (dozens a
    # second); eventbus reports the failed write itself, naming the topic, so keep only criticals here.
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
