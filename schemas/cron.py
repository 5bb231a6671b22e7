"""Cron schedules and time zones: validation, next-fire computation, tick ids and jitter.

Schedules (`spec.source.cron.schedule`):

- 5 fields (`min hour dom month dow`) or 6 fields with seconds first (`sec min hour dom month dow`,
  as Quartz/Spring write it), parsed by `cronsim`;
- the descriptors `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`;
- `@every <duration>`: every multiple of the duration since the Unix epoch, in UTC, so the ticks are
  the same on every replica and across restarts (a restart never shifts them).

Why cronsim rather than croniter: cronsim is small, strict (it names the bad field), maintained with
healthchecks.io, and reads 6-field schedules with the seconds first, like the examples we ship
(croniter reads the 6th field as seconds *last* unless told otherwise, so `*/5 * * * * *` would fire every
second). Neither gets DST right in every mode: croniter fires a fixed-hour job twice in the repeated
autumn hour, and cronsim's 6-field mode skips the spring gap and doubles the autumn hour. So we ask
cronsim only for *wall-clock* matches (naive local times, no zone) and map them to instants ourselves:

DST policy (tested for America/New_York, Europe/Berlin, Asia/Shanghai):

- **Skipped local times (spring)** fire once, at the first valid instant after the gap (the transition
  itself: a 02:30 job in New York fires at 03:00 EDT on the day clocks jump). Several ticks inside one gap
  collapse into that one firing, merged with a tick due exactly then.
- **Repeated local times (autumn)**: when the hour field is restricted (`30 1 * * *`), the wall time fires
  once, at its first occurrence. When the hour field is `*` (`*/30 * * * *`, `@hourly`, per-second
  schedules), every real instant fires, so an hourly job still runs every hour (twice at 01:00 local).
"""

from __future__ import annotations

import hashlib
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from cronsim import CronSim, CronSimError

from schemas.duration import parse_duration
from schemas.errors import SchemaError

DESCRIPTORS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
EVERY = "@every "
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MAX_SEGMENTS = 64  # zone transitions crossed while looking for one tick (a year has at most a few)


class CronScheduleError(SchemaError):
    """A schedule eventbus cannot run; the message names the schedule and what is wrong."""


class CronTimezoneError(SchemaError):
    """A time zone that is not a known IANA name."""


def validate_schedule(schedule: str) -> None:
    """Raise CronScheduleError (a ValueError) naming the problem when `schedule` cannot run."""
    parse_schedule(schedule)


def validate_timezone(name: str) -> None:
    """Raise CronTimezoneError (a ValueError) when `name` is not an IANA time zone."""
    load_timezone(name)


def load_timezone(name: str) -> zoneinfo.ZoneInfo:
    if not name or name != name.strip():
        raise CronTimezoneError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CronTimezoneError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin") from None


class Schedule(Protocol):
    """When a trigger fires: strictly-after queries on UTC instants."""

    def next_after(self, t: datetime) -> datetime:
        """The first firing instant strictly after `t` (aware), as an aware UTC datetime."""
        ...


@dataclass(frozen=True, slots=True)
class EverySchedule:
    """`@every <duration>`: instants `k * period` after the Unix epoch (UTC), to the microsecond."""

    period_us: int

    def next_after(self, t: datetime) -> datetime:
        since = (t - _EPOCH) // _US
        k = since // self.period_us + 1
        return _EPOCH + timedelta(microseconds=k * self.period_us)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression evaluated in a time zone, with the DST policy of this module."""

    expression: str
    tz: tzinfo
    hour_restricted: bool

    def _wall_next(self, wall: datetime, inclusive: bool) -> datetime:
        start = wall - _US if inclusive else wall
        return next(CronSim(self.expression, start))

    def next_after(self, t: datetime) -> datetime:
        tz = self.tz
        cur = t.astimezone(UTC)
        inclusive = False
        for _ in range(_MAX_SEGMENTS):
            off = _offset(tz, cur)
            wall = self._wall_next((cur + off).replace(tzinfo=None), inclusive)
            inst = (wall - off).replace(tzinfo=UTC)
            end = _transition(tz, cur, inst, off)
            if end is None:
                if self.hour_restricted and _second_pass(tz, wall, off):
                    cur, inclusive = inst, False  # the first pass of this wall time fired already
                    continue
                return inst
            off2 = _offset(tz, end)
            if off2 > off and wall < (end + off2).replace(tzinfo=None):
                return end  # the wall time does not exist: fire when the gap ends
            cur, inclusive = end, True
        raise CronScheduleError(f"no firing of {self.expression!r} found (too many zone transitions)")


def _offset(tz: tzinfo, instant: datetime) -> timedelta:
    off = instant.astimezone(tz).utcoffset()
    assert off is not None
    return off


def _transition(tz: tzinfo, after: datetime, until: datetime, off: timedelta) -> datetime | None:
    """The first instant in (after, until] whose UTC offset differs from `off` (to the second), or None.

    Steps a day at a time (zones change offset at most a few times a year), then bisects.
    """
    if until <= after:
        return None
    step = timedelta(days=1)
    lo = after
    while True:
        hi = min(lo + step, until)
        if _offset(tz, hi) != off:
            break
        if hi >= until:
            return None
        lo = hi
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if _offset(tz, mid) != off:
            hi = mid
        else:
            lo = mid
    # tzdata transitions fall on whole seconds: the one in (lo, hi] is the second after floor(lo)
    return lo.replace(microsecond=0) + timedelta(seconds=1)


def _second_pass(tz: tzinfo, wall: datetime, off: timedelta) -> bool:
    """Whether `wall` at offset `off` is the second occurrence of a wall time repeated by a fall-back."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    return first != second and off == second


def _hour_restricted(fields: list[str]) -> bool:
    hour = fields[2] if len(fields) == 6 else fields[1]
    return hour not in ("*", "*/1")


def parse_schedule(schedule: str, timezone: str = "UTC") -> Schedule:
    """The `Schedule` for a spec's `schedule` and `timezone`; raise CronScheduleError / CronTimezoneError."""
    s = " ".join(schedule.split())
    if not s:
        raise CronScheduleError("invalid schedule '': empty")
    tz = load_timezone(timezone)
    if s.startswith("@every"):
        text = s[len("@every") :].strip()
        if not text:
            raise CronScheduleError(f"invalid schedule {schedule!r}: @every needs a duration, like @every 5m")
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise CronScheduleError(f"invalid schedule {schedule!r}: {exc}") from None
        period_us = round(seconds * 1_000_000)
        if period_us <= 0:
            raise CronScheduleError(f"invalid schedule {schedule!r}: @every needs a positive duration")
        return EverySchedule(period_us)
    if s.startswith("@"):
        expr = DESCRIPTORS.get(s.lower())
        if expr is None:
            known = ", ".join([*DESCRIPTORS, "@every <duration>"])
            raise CronScheduleError(f"invalid schedule {schedule!r}: unknown descriptor (known: {known})")
    else:
        expr = s
    fields = expr.split(" ")
    if len(fields) not in (5, 6):
        raise CronScheduleError(
            f"invalid schedule {schedule!r}: expected 5 fields (min hour dom month dow) or 6 with seconds "
            f"first, got {len(fields)}"
        )
    try:
        next(CronSim(expr, datetime(2000, 1, 1)))
    except CronSimError as exc:
        raise CronScheduleError(f"invalid schedule {schedule!r}: {exc}") from None
    except StopIteration:
        raise CronScheduleError(f"invalid schedule {schedule!r}: it never fires") from None
    return CronSchedule(expr, tz, _hour_restricted(fields))


def next_fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next `count` firing instants strictly after `after` (UTC)."""
    out: list[datetime] = []
    t = after
    for _ in range(count):
        t = schedule.next_after(t)
        out.append(t)
    return out


def ticks_between(schedule: Schedule, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """Firing instants in (after, until], oldest first, at most `limit` of them."""
    out: list[datetime] = []
    t = schedule.next_after(after)
    while t <= until and len(out) < limit:
        out.append(t)
        t = schedule.next_after(t)
    return out


def rfc3339(t: datetime) -> str:
    """`2026-03-08T07:00:00Z` (microseconds only when not zero): how tick ids and `time` name an instant."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def tick_id(namespace: str, name: str, scheduled: datetime) -> str:
    """`<namespace>/<name>/<scheduled time, RFC 3339 UTC>`: the same tick has the same id everywhere."""
    return f"{namespace}/{name}/{rfc3339(scheduled)}"


def jitter_for(tick: str, bound: float) -> float:
    """A delay in [0, bound) derived from the tick id: random-looking, but equal on every replica."""
    if bound <= 0:
        return 0.0
    h = int.from_bytes(hashlib.sha256(tick.encode()).digest()[:8], "big")
    return bound * (h / 2**64)
