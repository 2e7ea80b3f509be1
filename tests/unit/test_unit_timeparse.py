"""Unit tests of botsched.core.timeparse: --join-at parsing, durations and the instant wire format."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from botsched.core.errors import InvalidInput
from botsched.core.timeparse import (
    JoinTime,
    check_join_time,
    format_instant,
    from_us,
    parse_duration,
    parse_instant,
    parse_join_at,
    resolve_zone,
    system_zone,
    to_us,
)

S = 1_000_000
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

#: 2025-06-16T16:40:12.518204Z, the "now" of SPEC §3's example.
NOW = to_us(datetime(2025, 6, 16, 16, 40, 12, 518204, tzinfo=UTC))


def utc_us(*args: int) -> int:
    return to_us(datetime(*args, tzinfo=UTC))


# -- ISO 8601 with an offset ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected_us, expected_text",
    [
        ("2024-01-15T10:30:00Z", utc_us(2024, 1, 15, 10, 30), "2024-01-15T10:30:00Z"),
        ("2025-06-16T16:24:00+0000", utc_us(2025, 6, 16, 16, 24), "2025-06-16T16:24:00Z"),
        ("2025-06-16T16:24:00+00:00", utc_us(2025, 6, 16, 16, 24), "2025-06-16T16:24:00Z"),
        ("2025-06-16T18:24:00+02:00", utc_us(2025, 6, 16, 16, 24), "2025-06-16T16:24:00Z"),
        ("2025-06-16T11:24:00-05:00", utc_us(2025, 6, 16, 16, 24), "2025-06-16T16:24:00Z"),
        ("2025-06-16T18:24:00.250+02:00", utc_us(2025, 6, 16, 16, 24, 0, 250000), "2025-06-16T16:24:00.250Z"),
        ("2025-06-16 16:24:00Z", utc_us(2025, 6, 16, 16, 24), "2025-06-16T16:24:00Z"),
        ("2025-06-16T16:24Z", utc_us(2025, 6, 16, 16, 24), "2025-06-16T16:24:00Z"),
        # crossing midnight and a year boundary through the offset
        ("2026-01-01T00:30:00+01:00", utc_us(2025, 12, 31, 23, 30), "2025-12-31T23:30:00Z"),
        ("  2024-01-15T10:30:00Z  ", utc_us(2024, 1, 15, 10, 30), "2024-01-15T10:30:00Z"),
    ],
)
def test_iso_with_offset(text: str, expected_us: int, expected_text: str) -> None:
    parsed = parse_join_at(text, NOW, BERLIN)
    assert parsed.us == expected_us
    assert parsed.text == expected_text
    assert parsed.warnings == []


@pytest.mark.parametrize(
    "fraction, expected_fraction, extra_us",
    [
        ("", "", 0),
        (".5", ".5", 500_000),
        (".250", ".250", 250_000),
        (".000", ".000", 0),
        (".123456", ".123456", 123_456),
        (".000001", ".000001", 1),
        (",250", ".250", 250_000),
    ],
)
def test_join_at_keeps_the_precision_it_was_given(fraction: str, expected_fraction: str, extra_us: int) -> None:
    parsed = parse_join_at(f"2025-06-16T18:24:00{fraction}+02:00", NOW, BERLIN)
    assert parsed.text == f"2025-06-16T16:24:00{expected_fraction}Z"
    assert parsed.us == utc_us(2025, 6, 16, 16, 24) + extra_us


def test_text_and_instant_always_agree_for_lowercase_t_with_fraction() -> None:
    # RFC 3339 allows a lower-case "t" (and _HAS_TIME accepts it). The instant keeps the
    # .250, so the text shown to users (and stored as join_at) must keep it too.
    parsed = parse_join_at("2025-06-16t18:24:00.250+02:00", NOW, BERLIN)
    assert parsed.us == utc_us(2025, 6, 16, 16, 24, 0, 250000)
    assert parse_instant(parsed.text) == parsed.us, f"text {parsed.text!r} does not say the instant it stands for"


@pytest.mark.parametrize(
    "text",
    ["2025-06-16t16:24:00Z", "2025-06-16T16:24:00z", "2025-06-16t16:24:00.250z", "2025-06-16T16:24:00.250z"],
)
def test_lowercase_t_and_z_are_accepted_like_rfc_3339(text: str) -> None:
    # RFC 3339 5.6: "T" and "Z" may alternatively be lower case. The parser already
    # accepts a lower-case "t" (and the canonical pattern expects "Z"); a lower-case "z" must work too.
    parsed = parse_join_at(text, NOW, BERLIN)
    assert parsed.us == utc_us(2025, 6, 16, 16, 24, 0, 250000 if ".250" in text else 0)
    assert parsed.text == text.upper()


def test_more_than_six_fractional_digits_is_refused() -> None:
    with pytest.raises(InvalidInput, match="6 fractional digits"):
        parse_join_at("2025-06-16T18:24:00.1234567+02:00", NOW, BERLIN)


# -- naive local times and DST -----------------------------------------------------------


@pytest.mark.parametrize(
    "text, zone, expected_us",
    [
        ("2025-06-16T18:24:00", BERLIN, utc_us(2025, 6, 16, 16, 24)),  # CEST, +02:00
        ("2026-01-15T10:00", BERLIN, utc_us(2026, 1, 15, 9, 0)),  # CET, +01:00
        ("2026-01-15T10:00:00.5", BERLIN, utc_us(2026, 1, 15, 9, 0, 0, 500000)),
        ("2026-07-04T12:00:00", NEW_YORK, utc_us(2026, 7, 4, 16, 0)),  # EDT, -04:00
        ("2026-12-04T12:00:00", NEW_YORK, utc_us(2026, 12, 4, 17, 0)),  # EST, -05:00
        ("2026-12-04T12:00:00", ZoneInfo("UTC"), utc_us(2026, 12, 4, 12, 0)),
    ],
)
def test_naive_time_is_local_to_the_given_zone(text: str, zone: ZoneInfo, expected_us: int) -> None:
    parsed = parse_join_at(text, NOW, zone)
    assert parsed.us == expected_us
    assert parsed.text.endswith("Z")
    assert parse_instant(parsed.text) == expected_us
    assert parsed.warnings == []


@pytest.mark.parametrize(
    "text, zone",
    [
        ("2026-03-29T02:30:00", BERLIN),
        ("2026-03-29T02:00:00", BERLIN),  # the first skipped instant
        ("2026-03-29T02:59:59.999999", BERLIN),  # the last one
        ("2026-03-08T02:30:00", NEW_YORK),
    ],
)
def test_time_in_spring_forward_gap_is_refused(text: str, zone: ZoneInfo) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        parse_join_at(text, NOW, zone)


@pytest.mark.parametrize(
    "text, expected_us",
    [
        ("2026-03-29T01:59:59", utc_us(2026, 3, 29, 0, 59, 59)),  # just before the gap, +01:00
        ("2026-03-29T03:00:00", utc_us(2026, 3, 29, 1, 0)),  # just after, +02:00
    ],
)
def test_times_around_the_gap_are_fine(text: str, expected_us: int) -> None:
    parsed = parse_join_at(text, NOW, BERLIN)
    assert parsed.us == expected_us
    assert parsed.warnings == []


def test_ambiguous_autumn_time_takes_the_first_offset_and_warns() -> None:
    parsed = parse_join_at("2026-10-25T02:30:00", NOW, BERLIN)
    # 02:30 happens at 00:30Z (CEST, +02:00) and again at 01:30Z (CET): the first one wins.
    assert parsed.us == utc_us(2026, 10, 25, 0, 30)
    assert parsed.text == "2026-10-25T00:30:00Z"
    assert len(parsed.warnings) == 1
    assert "twice" in parsed.warnings[0]
    assert "+02:00" in parsed.warnings[0]


@pytest.mark.parametrize(
    "text, expected_us",
    [
        ("2026-10-25T01:59:59", utc_us(2026, 10, 24, 23, 59, 59)),
        ("2026-10-25T03:00:00", utc_us(2026, 10, 25, 2, 0)),
    ],
)
def test_times_around_the_autumn_overlap_do_not_warn(text: str, expected_us: int) -> None:
    parsed = parse_join_at(text, NOW, BERLIN)
    assert parsed.us == expected_us
    assert parsed.warnings == []


def test_naive_time_without_zone_uses_tz_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # +09:00, no DST
    assert system_zone() == ZoneInfo("Asia/Tokyo")
    parsed = parse_join_at("2026-01-15T18:00:00", NOW)
    assert parsed.us == utc_us(2026, 1, 15, 9, 0)


def test_resolve_zone() -> None:
    assert resolve_zone("Europe/Berlin") == BERLIN
    with pytest.raises(InvalidInput, match="unknown time zone"):
        resolve_zone("Mars/Olympus_Mons")
    with pytest.raises(InvalidInput):
        resolve_zone("../../etc/passwd")


def test_resolve_zone_empty_means_the_system_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    assert resolve_zone("") == NEW_YORK
    assert resolve_zone(None) == NEW_YORK


# -- relative times ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [("+90s", 90), ("+10m", 600), ("+2h", 7200), ("+1d", 86400), ("+1h30m", 5400), ("+1d2h3m4s", 93784)],
)
def test_relative_times_are_from_now_to_the_millisecond(text: str, seconds: int) -> None:
    parsed = parse_join_at(text, NOW, BERLIN)
    exact = NOW + seconds * S
    assert parsed.us == exact - exact % 1000  # millisecond precision
    assert exact - parsed.us < 1000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed.text), parsed.text
    assert parse_instant(parsed.text) == parsed.us
    assert parsed.warnings == []


def test_relative_ninety_seconds_exact_text() -> None:
    assert parse_join_at("+90s", NOW, BERLIN).text == "2025-06-16T16:41:42.518Z"


@pytest.mark.parametrize("text", ["+", "+1", "+1x", "+m", "+1m1h", "+1.5h", "+ 10m", "+-10m", "++10m", "+10M"])
def test_bad_relative_times_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_join_at(text, NOW, BERLIN)


@pytest.mark.parametrize("text", ["-10m", "-1s", "-1h30m"])
def test_negative_relative_time_is_refused_as_past(text: str) -> None:
    with pytest.raises(InvalidInput, match="past"):
        parse_join_at(text, NOW, BERLIN)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "tomorrow",
        "now",
        "24:00",  # (an `at` time, but no such hour)
        "13pm",
        "0am",
        "10:60",
        "mon",  # a day without a time
        "tomorrow tomorrow 10:00",
        "someday 10:00",
        "2026-01-01",  # date only
        "2026-01-01Z",
        "2026-13-01T10:00:00Z",
        "2026-02-30T10:00:00Z",
        "2026-01-01T25:00:00Z",
        "2026-01-01T10Z",
        "2026-01-01T10:00:00+25:00",
        "2026-01-01T10:00:00 garbage",
        "20260101T100000Z",
        "1700000000",
    ],
)
def test_garbage_is_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_join_at(text, NOW, BERLIN)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "+999999999d",
        "+99999999999999999999d",
    ],
)
def test_out_of_range_times_are_invalid_input_not_a_crash(text: str) -> None:
    # SPEC §5: bad input is exit 2 (InvalidInput), never an internal error or a traceback.
    with pytest.raises(InvalidInput):
        parse_join_at(text, NOW, BERLIN)


# -- check_join_time --------------------------------------------------------------------


def test_past_join_time_is_refused_with_the_current_time() -> None:
    join = parse_join_at("2025-06-16T16:00:00Z", NOW, BERLIN)
    with pytest.raises(InvalidInput) as info:
        check_join_time(join, NOW, 120 * S)
    assert "in the past" in info.value.message
    assert "2025-06-16T16:00:00Z" in info.value.message
    assert "2025-06-16T16:40:12" in info.value.message  # the current time
    assert info.value.exit_code == 2


def test_join_time_equal_to_now_is_past() -> None:
    with pytest.raises(InvalidInput, match="in the past"):
        check_join_time(JoinTime(NOW, format_instant(NOW)), NOW, 120 * S)


def test_join_time_sooner_than_stage_lead_warns() -> None:
    warnings = check_join_time(JoinTime(NOW + 30 * S, "x"), NOW, 120 * S)
    assert len(warnings) == 1
    assert "spin up" in warnings[0]
    assert re.search(r"\b30(\.0+)?s\b", warnings[0]) and re.search(r"\b120(\.0+)?s\b", warnings[0]), warnings[0]


def test_join_time_one_microsecond_ahead_is_accepted_with_warning() -> None:
    assert len(check_join_time(JoinTime(NOW + 1, "x"), NOW, 120 * S)) == 1


@pytest.mark.parametrize("ahead_s", [120, 121, 86400])
def test_join_time_at_or_beyond_stage_lead_is_silent(ahead_s: int) -> None:
    assert check_join_time(JoinTime(NOW + ahead_s * S, "x"), NOW, 120 * S) == []


def test_zero_stage_lead_never_warns() -> None:
    assert check_join_time(JoinTime(NOW + 1, "x"), NOW, 0) == []


# -- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90),
        ("+90s", 90),
        ("-1m", -60),
        ("10m", 600),
        ("2h", 7200),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("0s", 0),
        (" 5m ", 300),
        ("120m", 7200),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds * S


@pytest.mark.parametrize("text", ["", "+", "-", "5", "h", "1x", "1m1h", "1.5h", "1 h", "1H", "s1", "1h 30m"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(InvalidInput, match="bad duration"):
        parse_duration(text)


# -- the instant wire format ------------------------------------------------------------


def test_format_instant_digits_and_truncation() -> None:
    us = utc_us(2025, 6, 16, 16, 40, 12, 999999)
    assert format_instant(us) == "2025-06-16T16:40:12.999999Z"
    assert format_instant(us, 3) == "2025-06-16T16:40:12.999Z"  # truncated, not rounded up
    assert format_instant(us, 1) == "2025-06-16T16:40:12.9Z"
    assert format_instant(us, 0) == "2025-06-16T16:40:12Z"
    assert format_instant(us, -1) == "2025-06-16T16:40:12Z"
    assert format_instant(0) == "1970-01-01T00:00:00.000000Z"
    assert format_instant(-1) == "1969-12-31T23:59:59.999999Z"


def test_to_us_is_exact_and_offset_aware() -> None:
    assert to_us(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert to_us(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1
    assert to_us(datetime(1970, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == 0
    # far from the epoch, where a float would lose the microseconds
    far = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert to_us(far) % S == 999999


def test_round_trips() -> None:
    rng = random.Random(1234)
    lo, hi = utc_us(1900, 1, 1), utc_us(2999, 12, 31)
    samples = [0, 1, -1, S - 1, NOW, lo, hi] + [rng.randrange(lo, hi) for _ in range(500)]
    for us in samples:
        assert to_us(from_us(us)) == us
        assert parse_instant(format_instant(us)) == us
        moment = from_us(us)
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
        assert from_us(to_us(moment)) == moment
    for offset_h in (-12, -5, 0, 2, 14):
        aware = datetime(2025, 6, 16, 18, 24, 0, 250000, tzinfo=timezone(timedelta(hours=offset_h)))
        assert from_us(to_us(aware)) == aware


def test_parse_instant_refuses_naive_and_garbage() -> None:
    with pytest.raises(InvalidInput, match="no UTC offset"):
        parse_instant("2025-06-16T16:40:12")
    with pytest.raises(InvalidInput):
        parse_instant("yesterday")


# -- times the way `at` takes them (SPEC §5), with an injected now ------------------------

#: Monday 2025-06-16 18:40:12 in Berlin (CEST, UTC+2).
BERLIN_MONDAY = NOW


def _at(text: str, now_us: int = BERLIN_MONDAY, zone: ZoneInfo = BERLIN) -> JoinTime:
    return parse_join_at(text, now_us, zone)


def _utc(text: str) -> int:
    return parse_instant(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20:00", "2025-06-16T18:00:00Z"),  # later today
        ("15:00", "2025-06-17T13:00:00Z"),  # passed today: tomorrow
        ("18:40", "2025-06-17T16:40:00Z"),  # this very minute has begun: tomorrow
        ("3pm", "2025-06-17T13:00:00Z"),
        ("9pm", "2025-06-16T19:00:00Z"),
        ("9 PM", "2025-06-16T19:00:00Z"),
        ("9:30pm", "2025-06-16T19:30:00Z"),
        ("12am", "2025-06-16T22:00:00Z"),  # the coming midnight
        ("12pm", "2025-06-17T10:00:00Z"),
        ("noon", "2025-06-17T10:00:00Z"),
        ("midnight", "2025-06-16T22:00:00Z"),
        ("tomorrow 09:30", "2025-06-17T07:30:00Z"),
        ("09:30 tomorrow", "2025-06-17T07:30:00Z"),
        ("Tomorrow noon", "2025-06-17T10:00:00Z"),
        ("today 23:00", "2025-06-16T21:00:00Z"),
        ("today 10:00", "2025-06-16T08:00:00Z"),  # past: resolved as said, refused later by check_join_time
        ("mon 20:00", "2025-06-16T18:00:00Z"),  # today is Monday and 20:00 is ahead
        ("mon 10:00", "2025-06-23T08:00:00Z"),  # today's 10:00 passed: next Monday
        ("tue 10:00", "2025-06-17T08:00:00Z"),
        ("friday 4pm", "2025-06-20T14:00:00Z"),
        ("sun midnight", "2025-06-21T22:00:00Z"),  # 00:00 at the start of Sunday
        ("thurs 8:05am", "2025-06-19T06:05:00Z"),
    ],
)
def test_at_style_times_resolve_in_the_local_zone(text: str, expected: str) -> None:
    parsed = _at(text)
    assert parsed.us == _utc(expected) and parsed.text == expected
    assert parsed.note is not None and expected in parsed.note and repr(text) in parsed.note  # printed to the user


def test_at_style_times_follow_the_zone_they_are_given() -> None:
    assert _at("tomorrow 09:30", zone=NEW_YORK).text == "2025-06-17T13:30:00Z"
    assert _at("tomorrow 09:30", zone=lambda: NEW_YORK).text == "2025-06-17T13:30:00Z"  # type: ignore[arg-type]


def test_iso_and_relative_times_carry_no_note() -> None:
    assert _at("+10m").note is None and _at("2025-06-17T10:00:00Z").note is None


#: Saturday before the spring change (Berlin, 2026-03-29 02:00 -> 03:00) and before the autumn one
#: (2026-10-25 03:00 -> 02:00), at noon local time.
SPRING_SAT = _utc("2026-03-28T11:00:00Z")
AUTUMN_SAT = _utc("2026-10-24T10:00:00Z")


def test_at_times_on_the_spring_dst_day() -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        _at("tomorrow 02:30", SPRING_SAT)
    assert _at("tomorrow 03:30", SPRING_SAT).text == "2026-03-29T01:30:00Z"  # CEST already
    assert _at("sun 01:30", SPRING_SAT).text == "2026-03-29T00:30:00Z"  # CET still
    assert _at("midnight", SPRING_SAT).text == "2026-03-28T23:00:00Z"
    assert _at("mon 10:00", SPRING_SAT).text == "2026-03-30T08:00:00Z"  # two days on, one hour less offset


def test_at_times_on_the_autumn_dst_day() -> None:
    twice = _at("tomorrow 02:30", AUTUMN_SAT)
    assert twice.text == "2026-10-25T00:30:00Z"  # the first 02:30 (CEST)
    assert any("happens twice" in warning for warning in twice.warnings)
    assert _at("tomorrow 03:30", AUTUMN_SAT).text == "2026-10-25T02:30:00Z"  # CET
    assert _at("mon 10:00", AUTUMN_SAT).text == "2026-10-26T09:00:00Z"
    assert _at("noon", AUTUMN_SAT).text == "2026-10-25T11:00:00Z"  # noon today passed: tomorrow, in CET
