"""Broker outages, reported once per backoff step by us instead of thousands of client-library lines.

While any source reports its broker unreachable, records of the client libraries' loggers (`aiokafka`,
`nats`) are counted and dropped; each outage report says how many were suppressed since the last one.
"""

from __future__ import annotations

import logging

CLIENT_LOGGERS = ("aiokafka", "kafka", "nats")


class ClientLogMuffler(logging.Filter):
    """A filter on the client libraries' loggers: drops and counts their records during an outage."""

    def __init__(self) -> None:
        super().__init__()
        self.outages = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.outages > 0:
            self._suppressed += 1
            return False
        return True

    def take(self) -> int:
        """Records suppressed since the last call."""
        n, self._suppressed = self._suppressed, 0
        return n

    def _attach(self) -> None:
        """Loggers filter only their own records (a filter does not apply to children): attach to each."""
        names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in CLIENT_LOGGERS]
        for name in (*CLIENT_LOGGERS, *names):
            lg = logging.getLogger(name)
            if self not in lg.filters:
                lg.addFilter(self)

    def begin(self) -> None:
        """An outage starts (one per source); client records are muffled until every outage ends."""
        self._attach()
        self.outages += 1

    def end(self) -> None:
        self.outages = max(0, self.outages - 1)


MUFFLER = ClientLogMuffler()
"""The process-wide muffler (client loggers are process-wide too)."""
