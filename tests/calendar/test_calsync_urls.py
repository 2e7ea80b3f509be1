"""Finding an occurrence's meeting link."""

from __future__ import annotations

import icalendar
import pytest

from botsched.calsync import find_meeting_url, links_in_text


def event(**props: str) -> icalendar.Event:
    lines = ["BEGIN:VEVENT", "UID:u", "DTSTART:20300318T100000Z"]
    lines += [f"{name.replace('_', '-')}:{value}" for name, value in props.items()]
    lines.append("END:VEVENT")
    return icalendar.Event.from_ical("\r\n".join(lines) + "\r\n")


def test_x_google_conference() -> None:
    assert find_meeting_url(event(X_GOOGLE_CONFERENCE="https://meet.google.com/abc-defg-hij")) == \
        "https://meet.google.com/abc-defg-hij"


def test_url_property_of_a_meeting_platform_counts() -> None:
    assert find_meeting_url(event(URL="https://meet.jit.si/room")) == "https://meet.jit.si/room"
    assert find_meeting_url(event(URL="https://whereby.com/acme-standup")) == "https://whereby.com/acme-standup"


@pytest.mark.parametrize(
    "url",
    ["https://www.meetup.com/python-berlin/events/300123456/", "https://www.jazzfest-example.de/programm/2030/x",
     "https://intranet.example/event/42"],
)
def test_url_property_that_is_a_web_page_is_not_a_meeting(url: str) -> None:
    assert find_meeting_url(event(URL=url)) is None


def test_a_conference_property_counts_whatever_the_host() -> None:
    assert find_meeting_url(event(CONFERENCE="https://video.example.org/room/7")) == "https://video.example.org/room/7"
    assert find_meeting_url(event(URL="https://www.meetup.com/e/1/", CONFERENCE="https://video.example.org/r")) == \
        "https://video.example.org/r"


def test_known_platform_beats_a_url_property() -> None:
    found = find_meeting_url(event(URL="https://intranet.example/event/42",
                                   DESCRIPTION="Join https://zoom.us/j/123456789"))
    assert found == "https://zoom.us/j/123456789"


def test_unknown_links_in_a_description_are_not_meetings() -> None:
    assert find_meeting_url(event(DESCRIPTION="Agenda: https://docs.example.com/agenda")) is None


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("https://acme.zoom.us/j/111222333", "https://acme.zoom.us/j/111222333"),
        ("Zoom: https://acme.zoom.us/j/111222333 (passcode in 1Password)", "https://acme.zoom.us/j/111222333"),
        ("https://meet.jit.si/room", "https://meet.jit.si/room"),  # a meeting platform (Jitsi)
        ("https://jitsi.acme.example/weekly", "https://jitsi.acme.example/weekly"),  # a self-hosted one
        ("https://blog.example.org/2030/03/post", None),  # nothing but a link, but to a web page
        ("Room 4 (see https://maps.example/room4)", None),  # a mention is not a meeting
        ("Microsoft Teams Meeting", None),
    ],
)
def test_location(location: str, expected: str | None) -> None:
    assert find_meeting_url(event(LOCATION=location)) == expected


def test_teams_join_link_beats_meeting_options_and_help_links() -> None:
    text = (
        "Learn More<https://aka.ms/JoinTeamsMeeting> | Meeting options<https://teams.microsoft.com/meetingOptions/"
        "?organizerId=1&tenantId=2> Click here to join the meeting<https://teams.microsoft.com/l/meetup-join/"
        "19%3ameeting_X%40thread.v2/0?context=%7b%7d>"
    )
    assert find_meeting_url(event(DESCRIPTION=text)) == \
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_X%40thread.v2/0?context=%7b%7d"


def test_zoom_join_link_beats_local_numbers_page() -> None:
    text = "Find your local number: https://us02web.zoom.us/u/kdXyZ\\nJoin: https://us02web.zoom.us/j/987?pwd=x"
    assert find_meeting_url(event(DESCRIPTION=text)) == "https://us02web.zoom.us/j/987?pwd=x"


def test_meet_support_page_is_not_a_meeting() -> None:
    text = "Learn more about Meet at: https://support.google.com/a/users/answer/9282720"
    assert find_meeting_url(event(DESCRIPTION=text)) is None


def test_html_description_with_entities_and_google_redirect() -> None:
    text = ('<p>Join: <a href="https://www.google.com/url?q=https://zoom.us/j/555?pwd%3Dabc&amp;sa=D">here</a>'
            "</p><br>Tom &amp; Jerry")
    assert find_meeting_url(event(DESCRIPTION=text)) == "https://zoom.us/j/555?pwd=abc"


def test_html_alt_description() -> None:
    found = find_meeting_url(event(X_ALT_DESC='<html><body><a href="https://acme.webex.com/meet/jdoe">Join'
                                              "</a></body></html>"))
    assert found == "https://acme.webex.com/meet/jdoe"


def test_outlook_safe_links_are_unwrapped() -> None:
    wrapped = ("https://eur01.safelinks.protection.outlook.com/?url=https%3A%2F%2Fzoom.us%2Fj%2F42&data=05%7C01"
               "&reserved=0")
    assert find_meeting_url(event(DESCRIPTION=f"Join {wrapped}")) == "https://zoom.us/j/42"


@pytest.mark.parametrize(
    ("text", "links"),
    [
        ("(https://zoom.us/j/1).", ["https://zoom.us/j/1"]),
        ("see https://zoom.us/j/1, https://zoom.us/j/2; ok", ["https://zoom.us/j/1", "https://zoom.us/j/2"]),
        ("<https://zoom.us/j/3>", ["https://zoom.us/j/3"]),
        ('"https://zoom.us/j/4"', ["https://zoom.us/j/4"]),
        ("https://en.wikipedia.org/wiki/Foo_(bar)", ["https://en.wikipedia.org/wiki/Foo_(bar)"]),
        ("no links here", []),
        ("ftp://files.example/x and mailto:a@b.c", []),
    ],
)
def test_links_in_text(text: str, links: list[str]) -> None:
    assert links_in_text(text) == links


def test_same_link_twice_is_listed_once() -> None:
    assert links_in_text('<a href="https://zoom.us/j/1">https://zoom.us/j/1</a>') == ["https://zoom.us/j/1"]


def test_a_link_too_long_for_a_bot_is_ignored() -> None:
    long = "https://zoom.us/j/1?x=" + "a" * 3000
    assert find_meeting_url(event(DESCRIPTION=long)) is None
