"""The nine ways real exports went wrong (issue 16), one fixture each.

Each fixture is modelled on what the exporter named in its file name writes; each test
failed on the code before the fix (see docs/calendar.md, "Real exports").
"""

from __future__ import annotations

import re
from datetime import UTC

import pytest
from calsync_helpers import BERLIN, NOW_US, by_summary, calendar, expand, fixture_bytes, us

from botsched import calsync
from botsched.core.errors import InvalidInput

UTC = UTC
#: What Python's own error text looks like: none of it may reach a user.
PYTHON_SPEAK = re.compile(
    r"object|attribute|instances of|operand|Traceback|NoneType|'list'|datetime\.|\bdt\b|Error\b|KeyError"
)


def line_of(fixture: str, needle: str) -> int:
    """The (1-based) line of the fixture where ``needle`` starts."""
    for number, line in enumerate(fixture_bytes(fixture).decode().splitlines(), 1):
        if line.startswith(needle):
            return number
    raise AssertionError(f"{needle!r} not in {fixture}")


def reasons(result: calsync.Expansion) -> dict[str, str]:
    return {s.summary: s.reason for s in result.skipped}


# 1 -- RANGE=THISANDFUTURE ---------------------------------------------------------------

TAF_UID = "3f2d9c1e-7b4a-4d2e-9a61-0c5e8b7d4f10"


def test_thisandfuture_override_keeps_every_occurrence_with_its_own_key() -> None:
    result = expand("nextcloud_thisandfuture.ics")
    assert not result.skipped  # nothing is a "duplicate"
    got = [(w.key, w.join_at, w.summary) for w in result.wanted]
    expected = [(f"ical:{TAF_UID}@2030-03-{d}T08:00:00Z", f"2030-03-{d}T08:00:00Z", "Daily check-in")
                for d in (18, 19, 20)]
    # the override itself (10:00 instead of 09:00), keyed by its RECURRENCE-ID ...
    expected.append((f"ical:{TAF_UID}@2030-03-21T08:00:00Z", "2030-03-21T09:00:00Z", "Daily check-in (new time)"))
    # ... and every later one moved with it, each keyed by its own original start
    expected += [(f"ical:{TAF_UID}@2030-03-{d}T08:00:00Z", f"2030-03-{d}T09:00:00Z", "Daily check-in (new time)")
                 for d in range(22, 31)]
    # 31 March is summer time: originally 09:00 CEST (07:00Z), now 10:00 CEST (08:00Z)
    expected.append((f"ical:{TAF_UID}@2030-03-31T07:00:00Z", "2030-03-31T08:00:00Z", "Daily check-in (new time)"))
    assert got == expected


def test_thisandfuture_reschedules_the_bots_of_the_moved_occurrences() -> None:
    result = expand("nextcloud_thisandfuture.ics")
    key = f"ical:{TAF_UID}@2030-03-25T08:00:00Z"
    bot = {"id": "bot_AAAAAAAAAAAAAAAA", "state": "scheduled", "join_at": "2030-03-25T08:00:00Z",
           "meeting_url": "https://meet.google.com/dai-lych-eck", "deduplication_key": key, "metadata": {}}
    actions = {a.key: a for a in calsync.plan(result.wanted, [bot], NOW_US, skipped=result.skipped)}
    assert actions[key].action == "reschedule" and actions[key].join_at == "2030-03-25T09:00:00Z"


# 2 -- a VEVENT without DTSTART (iTIP) ---------------------------------------------------


def test_itip_event_without_dtstart_does_not_sink_the_real_meeting() -> None:
    result = expand("exchange_itip_without_dtstart.ics")
    [meeting] = result.wanted
    assert meeting.summary == "Capacity planning" and meeting.join_at == "2030-03-19T13:00:00Z"
    assert meeting.meeting_url.startswith("https://teams.microsoft.com/l/meetup-join/19%3ameeting_ZmFicmlr")
    [skip] = result.skipped
    assert skip.summary == "Meeting Forward Notification: Capacity planning"
    assert "DTSTART" in skip.reason and skip.start_us is None
    assert skip.key.startswith("ical:040000008200E00074C5B7101A82E00800000000FFEEDDCCBBAA")


# 3 -- all-day dates with a TZID -----------------------------------------------------------


def test_all_day_dates_with_a_tzid_stay_all_day() -> None:
    result = expand("sabredav_allday_tzid.ics")
    assert [(w.summary, w.join_at) for w in result.wanted] == [("Design review", "2030-03-20T14:00:00Z")]
    assert reasons(result) == {"All-hands day": calsync.ALL_DAY, "Spring break (office closed)": calsync.ALL_DAY,
                               "Team offsite": calsync.ALL_DAY}
    [offsite] = [s for s in result.skipped if s.summary == "Team offsite"]
    assert offsite.key == "ical:offsite-20300325@nextcloud.example@2030-03-25"  # a date, not a local midnight


# 4 -- a TZID with a leading space --------------------------------------------------------------


def test_tzid_with_a_leading_space_still_names_its_vtimezone() -> None:
    result = by_summary(expand("outlook_tzid_leading_space.ics", zone=UTC))
    # 11:00 in Paris (the VTIMEZONE " 1": CET in March) is 10:00 UTC, not 11:00 floating
    assert [w.join_at for w in result["Point hebdo Paris"]] == ["2030-03-20T10:00:00Z"]
    assert [w.join_at for w in result["1:1 Camille"]] == ["2030-03-22T08:00:00Z", "2030-03-29T08:00:00Z"]


# 5 -- RDATE;VALUE=PERIOD (Lotus Notes) ----------------------------------------------------------

LOTUS = "1C5E9F0A3B7D2E4FC1257E8A004B3C2D-Lotus_Notes_Generated"


def test_rdate_periods_plan_every_date() -> None:
    result = expand("lotus_notes_rdate_period.ics")
    steering = [(w.key, w.join_at, w.summary) for w in result.wanted if w.uid == LOTUS]
    assert steering == [
        (f"ical:{LOTUS}@2030-03-18T13:00:00Z", "2030-03-18T13:00:00Z", "Steering committee"),
        (f"ical:{LOTUS}@2030-03-20T13:00:00Z", "2030-03-20T13:00:00Z", "Steering committee"),
        (f"ical:{LOTUS}@2030-03-25T13:00:00Z", "2030-03-25T15:30:00Z", "Steering committee (moved)"),
        (f"ical:{LOTUS}@2030-03-27T13:00:00Z", "2030-03-27T13:00:00Z", "Steering committee"),
    ]  # 8 April is after the window
    vendor = [w.join_at for w in result.wanted if w.summary == "Vendor call"]
    assert vendor == ["2030-03-19T09:00:00Z", "2030-03-26T09:00:00Z"]
    assert not result.skipped


def test_rdate_list_with_spaces_after_commas_is_read() -> None:
    body = ("UID:sp\nSUMMARY:Spaced\nDTSTART:20300318T130000Z\nDTEND:20300318T140000Z\n"
            "RDATE;VALUE=PERIOD:20300318T130000Z/20300318T140000Z, 20300320T130000Z/PT1H,\nURL:https://zoom.us/j/1")
    assert [w.join_at for w in expand(calendar(body).encode()).wanted] == ["2030-03-18T13:00:00Z",
                                                                          "2030-03-20T13:00:00Z"]


# 6 -- a malformed RRULE -------------------------------------------------------------------------


def test_malformed_rrule_is_a_skip_row_with_the_reason() -> None:
    fixture = "zimbra_malformed_rrule.ics"
    result = expand(fixture)
    assert [w.summary for w in result.wanted] == ["Customer onboarding"]
    why = reasons(result)
    assert set(why) == {"Ops weekly", "Monthly business review"}
    assert "RRULE" in why["Ops weekly"] and "UNTL" in why["Ops weekly"] and "UNTIL" in why["Ops weekly"]
    assert f"line {line_of(fixture, 'RRULE:FREQ=WEEKLY;UNTL')}" in why["Ops weekly"]
    assert "BYDAY" in why["Monthly business review"] and "1XX" in why["Monthly business review"]
    assert all(s.unreadable and s.start_us is None for s in result.skipped)


def test_bots_of_an_unreadable_series_are_left_alone() -> None:
    result = expand("zimbra_malformed_rrule.ics")
    key = "ical:5a1e3b7c-4f2d-4c8a-9e6b-1d0f2a3b4c5d@2030-03-19T08:30:00Z"
    bot = {"id": "bot_OPSOPSOPSOPSOPS1", "state": "scheduled", "join_at": "2030-03-19T08:30:00Z",
           "meeting_url": "https://meet.google.com/ops-week-lyy", "deduplication_key": key, "metadata": {}}
    [action] = [a for a in calsync.plan(result.wanted, [bot], NOW_US, skipped=result.skipped) if a.key == key]
    assert action.action == "unchanged" and "could not be read" in (action.reason or "")


# 7 -- URL is usually the event's web page -------------------------------------------------------


def test_url_counts_only_when_it_is_a_meeting_link() -> None:
    result = expand("meetup_url_is_a_web_page.ics")
    assert {(w.summary, w.meeting_url) for w in result.wanted} == {
        ("Office hours", "https://acme.zoom.us/j/5556667778?pwd=b2ZmaWNlaG91cnM"),
        ("Pairing with Jo", "https://meet.jit.si/acme-pairing-jo"),
        ("Python Berlin online: Typing in practice", "https://us06web.zoom.us/j/84012345678?pwd=bWVldHVwcHlAYmVy"),
    }
    assert reasons(result) == {"Python Berlin: March talks night": calsync.NO_URL,
                               "Jazz im Hof (festival programme)": calsync.NO_URL,
                               "Reading: new blog post": calsync.NO_URL}


# 8 -- one bad property spoils only its own event -------------------------------------------------


def test_one_bad_property_skips_only_that_event() -> None:
    fixture = "thunderbird_one_bad_property.ics"
    result = expand(fixture)
    assert sorted(w.summary for w in result.wanted) == [f"Team meeting {i}" for i in range(1, 7)]
    why = reasons(result)
    assert set(why) == {"Partner sync", "Customer call (Pune)", "Retro"}
    assert "TZID" in why["Partner sync"] and "empty" in why["Partner sync"]
    assert f"line {line_of(fixture, 'DTSTART;TZID=:')}" in why["Partner sync"]
    assert "Customer Standard Time" in why["Customer call (Pune)"] and "+5328" in why["Customer call (Pune)"]
    assert f"line {line_of(fixture, 'TZOFFSETFROM:+5328')}" in why["Customer call (Pune)"]
    assert "DTSTART" in why["Retro"] and "twice" in why["Retro"]
    assert f"line {line_of(fixture, 'DTSTART;TZID=Europe/Berlin:20300321T140000')}" in why["Retro"]
    assert result.warnings and "3 events could not be read" in result.warnings[0]


def test_a_calendar_of_nothing_but_unreadable_events_is_refused() -> None:
    text = calendar("UID:a\nSUMMARY:A\nDTSTART:20300318T100000Z\nDTSTART:20300318T110000Z\nURL:https://zoom.us/j/1",
                    "UID:b\nSUMMARY:B\nDTSTART:20300319T100000Z\nRRULE:FREQ=WEKLY\nURL:https://zoom.us/j/2")
    with pytest.raises(InvalidInput) as caught:
        calsync.expand(text.encode(), NOW_US, source="team.ics")
    message = caught.value.message
    assert message.startswith("team.ics: no event could be read") and "\n" not in message
    assert "DTSTART" in message and "line 8" in message


def test_a_bad_line_between_events_is_only_a_warning() -> None:
    text = calendar("UID:a\nSUMMARY:A\nDTSTART:20300318T100000Z\nURL:https://zoom.us/j/1",
                    extra="garbage without a colon\n")
    result = expand(text.encode())
    assert [w.key for w in result.wanted] == ["ical:a"]
    assert any("line 4" in w for w in result.warnings)


# 9 -- messages in calendar terms --------------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "needle", "words"),
    [
        ("outlook-two-ends-01@contoso.example", "DTEND;TZID=W. Europe Standard Time:20300318T113000", ("DTEND",)),
        ("outlook-time-end-02@contoso.example", "DTEND;VALUE=TIME", ("DTEND", "time of day")),
        ("outlook-bad-start-03@contoso.example", "DTSTART;TZID=W. Europe Standard Time:2030-03-20", ("DTSTART",)),
        ("outlook-bad-duration-04@contoso.example", "DURATION:1 hour", ("DURATION", "1 hour")),
        ("outlook-bad-exdate-05@contoso.example", "EXDATE:2030032", ("EXDATE", "2030032")),
    ],
)
def test_every_reason_names_the_event_the_property_and_the_line(uid: str, needle: str, words: tuple[str]) -> None:
    fixture = "outlook_raw_python_errors.ics"
    result = expand(fixture)
    assert [w.summary for w in result.wanted] == ["Quarterly planning"]
    [skip] = [s for s in result.skipped if s.uid == uid]
    assert uid in skip.reason and f"line {line_of(fixture, needle)}" in skip.reason
    for word in words:
        assert word in skip.reason
    assert not PYTHON_SPEAK.search(skip.reason), skip.reason


def test_no_python_error_text_for_odd_time_values() -> None:
    odd = [
        "DTSTART;VALUE=TIME:100000",
        "DTSTART:20300318T100000Z\nRECURRENCE-ID:20300318T100000Z\nRECURRENCE-ID:20300319T100000Z",
        "DTSTART:20300318T100000Z\nDURATION:PT1H\nDURATION:PT2H",
        "DTSTART;VALUE=DATE:20300318\nDTEND:20300318T110000Z",
        "DTSTART:",
        "DTSTART:20300318T100000Z\nRDATE:2030031",
    ]
    events = [f"UID:odd-{i}\nSUMMARY:Odd {i}\n{body}\nURL:https://zoom.us/j/1" for i, body in enumerate(odd)]
    result = expand(calendar(*events, "UID:fine\nSUMMARY:Fine\nDTSTART:20300318T100000Z\nURL:https://zoom.us/j/2")
                    .encode())
    assert [w.key for w in result.wanted] == ["ical:fine"]
    assert len(result.skipped) == len(odd)
    for skip in result.skipped:
        assert skip.uid in skip.reason and re.search(r"line \d+", skip.reason), skip.reason
        assert not PYTHON_SPEAK.search(skip.reason), skip.reason


def test_file_level_errors_name_the_line() -> None:
    with pytest.raises(InvalidInput) as caught:
        calsync.expand(b"BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:x\n", NOW_US, source="cut.ics")
    assert caught.value.message.startswith("cut.ics: ") and "line 1" in caught.value.message
    assert not PYTHON_SPEAK.search(caught.value.message)


def test_berlin_default_zone_is_unaffected() -> None:
    # sanity: the floating fallback is still config defaults.timezone
    [want] = expand(calendar("UID:f\nSUMMARY:F\nDTSTART:20300318T100000\nURL:https://zoom.us/j/1").encode()).wanted
    assert want.start_us == us(2030, 3, 18, 10, tz=BERLIN)
