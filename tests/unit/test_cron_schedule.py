"""Cron schedules: fields, descriptors, @every, DST policy, tick ids, jitter, validation errors."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from schemas.cron import (
    CronScheduleError,
    CronTimezoneError,
    jitter_for,
    next_fires,
    parse_schedule,
    rfc3339,
    tick_id,
)
from schemas.trigger import CronSource


def local(expr: str, tz: str, start: datetime, n: int) -> list[str]:
    zone = ZoneInfo(tz)
    return [t.astimezone(zone).isoformat() for t in next_fires(parse_schedule(expr, tz), start, n)]


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


# --- DST: America/New_York 2026 (spring 8 March, autumn 1 November) ---------------------------------

@pytest.mark.parametrize("expr", ["30 2 * * *", "0 30 2 * * *"])
def test_new_york_spring_skipped_time_fires_once_at_end_of_gap(expr: str) -> None:
    assert local(expr, "America/New_York", utc(2026, 3, 7, 12), 3) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]


@pytest.mark.parametrize("expr", ["30 1 * * *", "0 30 1 * * *"])
def test_new_york_autumn_repeated_time_fires_once(expr: str) -> None:
    assert local(expr, "America/New_York", utc(2026, 10, 31, 12), 3) == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"]


def test_new_york_autumn_no_refire_when_starting_inside_second_pass() -> None:
    start = datetime(2026, 11, 1, 1, 10, tzinfo=ZoneInfo("America/New_York"), fold=1)  # 01:10 EST
    assert local("30 1 * * *", "America/New_York", start, 1) == ["2026-11-02T01:30:00-05:00"]


def test_new_york_hour_wildcard_fires_every_real_half_hour_in_both_transitions() -> None:
    assert local("*/30 * * * *", "America/New_York", utc(2026, 11, 1, 4, 50), 6) == [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00", "2026-11-01T02:30:00-05:00"]
    assert local("*/30 * * * *", "America/New_York", utc(2026, 3, 8, 6, 10), 3) == [
        "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]


def test_per_second_schedule_across_spring_gap_has_no_duplicates() -> None:
    ticks = next_fires(parse_schedule("*/20 * * * * *", "America/New_York"), utc(2026, 3, 8, 6, 59, 0), 6)
    assert [rfc3339(t) for t in ticks] == [
        "2026-03-08T06:59:20Z", "2026-03-08T06:59:40Z", "2026-03-08T07:00:00Z", "2026-03-08T07:00:20Z",
        "2026-03-08T07:00:40Z", "2026-03-08T07:01:00Z"]


def test_berlin_both_transitions() -> None:
    assert local("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert local("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_shanghai_has_no_dst() -> None:
    ticks = local("0 9 * * *", "Asia/Shanghai", utc(2026, 3, 1), 365)
    assert all(t.endswith("T09:00:00+08:00") for t in ticks)
    assert len(set(ticks)) == 365


# --- forms -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("desc", "expected"), [
    ("@yearly", "2027-01-01T00:00:00+00:00"), ("@annually", "2027-01-01T00:00:00+00:00"),
    ("@monthly", "2026-04-01T00:00:00+00:00"), ("@weekly", "2026-03-15T00:00:00+00:00"),
    ("@daily", "2026-03-11T00:00:00+00:00"), ("@hourly", "2026-03-10T13:00:00+00:00"),
])
def test_descriptors(desc: str, expected: str) -> None:
    assert local(desc, "UTC", utc(2026, 3, 10, 12, 30), 1) == [expected]


def test_six_fields_have_seconds_first() -> None:
    assert [rfc3339(t) for t in next_fires(parse_schedule("*/15 * * * * *"), utc(2026, 1, 1), 2)] == [
        "2026-01-01T00:00:15Z", "2026-01-01T00:00:30Z"]


def test_every_is_anchored_to_the_epoch_so_restarts_do_not_shift_it() -> None:
    s = parse_schedule("@every 7s")
    a = s.next_after(utc(2026, 1, 1, 0, 0, 0))
    b = s.next_after(datetime(2026, 1, 1, 0, 0, 3, 123456, tzinfo=UTC))  # a "restart" at another moment
    assert a == b
    assert int(a.timestamp()) % 7 == 0
    assert s.next_after(a).timestamp() - a.timestamp() == 7
    sub = parse_schedule("@every 250ms")
    assert [rfc3339(t) for t in next_fires(sub, utc(2026, 1, 1), 2)] == [
        "2026-01-01T00:00:00.250000Z", "2026-01-01T00:00:00.500000Z"]


def test_every_ignores_timezone() -> None:
    assert parse_schedule("@every 1h", "Asia/Shanghai").next_after(utc(2026, 1, 1, 0, 5)) == utc(2026, 1, 1, 1)


# --- ids and jitter -------------------------------------------------------------------------------

def test_tick_id_is_rfc3339_utc() -> None:
    t = datetime(2026, 3, 8, 3, 0, tzinfo=ZoneInfo("America/New_York"))
    assert tick_id("shop", "report", t) == "shop/report/2026-03-08T07:00:00Z"


def test_jitter_is_deterministic_and_bounded() -> None:
    ids = [f"ns/a/2026-01-01T00:00:{i:02d}Z" for i in range(60)]
    values = [jitter_for(i, 5.0) for i in ids]
    assert values == [jitter_for(i, 5.0) for i in ids]
    assert all(0 <= v < 5.0 for v in values)
    assert len(set(values)) == 60
    assert jitter_for(ids[0], 0) == 0


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("schedule", "message"), [
    ("61 * * * *", "Bad minute"),
    ("* * *", "expected 5 fields"),
    ("* * * * * * *", "expected 5 fields"),
    ("@daly", "unknown descriptor"),
    ("@every", "@every needs a duration"),
    ("@every 0s", "positive duration"),
    ("@every five", "invalid duration"),
    ("0 0 30 2 *", "Bad day-of-month"),
])
def test_invalid_schedules_say_why(schedule: str, message: str) -> None:
    with pytest.raises(CronScheduleError, match=message):
        parse_schedule(schedule)
    with pytest.raises(ValidationError, match=message):
        CronSource(schedule=schedule)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "EST5EDT ", "", "../etc/passwd"])
def test_invalid_timezones_rejected(zone: str) -> None:
    with pytest.raises(CronTimezoneError, match="unknown time zone"):
        parse_schedule("* * * * *", zone)
    with pytest.raises(ValidationError, match="unknown time zone"):
        CronSource.model_validate({"schedule": "* * * * *", "timeZone": zone})
