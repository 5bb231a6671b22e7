"""Cron schedules and time zones: validation (the cron issue extends this into next-fire computation)."""

from __future__ import annotations

import zoneinfo

from cronsim import CronSim, CronSimError


def validate_schedule(schedule: str) -> None:
    """Raise ValueError naming the problem when `schedule` is not a schedule eventbus can run."""
    s = schedule.strip()
    if s.startswith("@every "):
        from schemas.duration import parse_duration

        if parse_duration(s[len("@every ") :]) <= 0:
            raise ValueError(f"invalid schedule {schedule!r}: @every needs a positive duration")
        return
    from datetime import UTC, datetime

    try:
        CronSim(s, datetime.now(UTC))
    except CronSimError as exc:
        raise ValueError(f"invalid schedule {schedule!r}: {exc}") from None


def validate_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin") from None
