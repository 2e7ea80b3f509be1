"""A real Radicale CalDAV server (started here, loopback, temp storage, htpasswd auth):
events created through CalDAV, moved and deleted, read back through ``sources``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from calsync_helpers import NOW_US, expand
from calsync_servers import PASSWORD, USER, Radicale, free_port, ics

from botsched import calsync
from botsched.calsync import sources
from botsched.calsync.sources import SourceError

pytest.importorskip("radicale")
pytest.importorskip("caldav.davclient")



@pytest.fixture(scope="module")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    server = Radicale(tmp_path_factory.mktemp("radicale"))
    yield server
    server.stop()


@pytest.fixture
def collection(radicale: Radicale, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh calendar collection for each test."""
    with radicale.client() as client:
        name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40].lower()
        yield client.principal().make_calendar(name=name, cal_id=name)


def source_of(radicale: Radicale, collection: Any, **auth: str) -> sources.Source:
    url = "caldav+" + str(collection.url)
    auth = auth or {"password_file": str(radicale.password_file)}
    return sources.parse_source(url, user=USER, **auth)


def test_events_created_moved_and_deleted_through_caldav(radicale: Radicale, collection: Any) -> None:
    standup = collection.save_event(ics("standup-1", "20300318T083000Z", "Standup"))
    collection.save_event(ics("review-2", "20300319T140000Z", "Review", "https://zoom.us/j/222"))
    source = source_of(radicale, collection)

    first = sources.fetch(source)
    assert first.validators.sync_token
    result = expand(first.data or b"", calendar="team")
    assert [(w.key, w.join_at, w.meeting_url) for w in result.wanted] == [
        ("ical/team:standup-1", "2030-03-18T08:30:00Z", "https://meet.google.com/abc-defg-hij"),
        ("ical/team:review-2", "2030-03-19T14:00:00Z", "https://zoom.us/j/222"),
    ]
    bots = [{"id": f"bot_{n}", "deduplication_key": w.key, "state": "scheduled", "join_at": w.join_at,
             "meeting_url": w.meeting_url} for n, w in enumerate(result.wanted)]

    assert sources.fetch(source, first.validators).unchanged  # same sync-token: nothing downloaded

    standup.data = ics("standup-1", "20300318T093000Z", "Standup (later)")
    standup.save()
    collection.event_by_uid("review-2").delete()
    collection.save_event(ics("retro-3", "20300320T160000Z", "Retro"))
    moved = sources.fetch(source, first.validators)
    assert not moved.unchanged and moved.validators.sync_token != first.validators.sync_token
    result = expand(moved.data or b"", calendar="team")
    actions = {(a.action, a.key, a.join_at) for a in calsync.plan(result.wanted, bots, NOW_US,
                                                                   skipped=result.skipped, calendar="team")}
    assert actions == {
        ("reschedule", "ical/team:standup-1", "2030-03-18T09:30:00Z"),
        ("cancel", "ical/team:review-2", "2030-03-19T14:00:00Z"),
        ("create", "ical/team:retro-3", "2030-03-20T16:00:00Z"),
    }


def test_an_empty_collection_is_an_empty_calendar(radicale: Radicale, collection: Any) -> None:
    fetched = sources.fetch(source_of(radicale, collection))
    result = expand(fetched.data or b"", calendar="empty")
    assert result.wanted == [] and result.skipped == []


def test_a_recurring_series_with_a_moved_occurrence(radicale: Radicale, collection: Any) -> None:
    series = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\n"
              "BEGIN:VEVENT\r\nUID:weekly\r\nDTSTAMP:20300301T000000Z\r\nDTSTART:20300318T100000Z\r\n"
              "DURATION:PT30M\r\nRRULE:FREQ=WEEKLY;COUNT=3\r\nSUMMARY:Weekly\r\nLOCATION:https://zoom.us/j/3\r\n"
              "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:weekly\r\nDTSTAMP:20300301T000000Z\r\n"
              "RECURRENCE-ID:20300325T100000Z\r\nDTSTART:20300326T120000Z\r\nDURATION:PT30M\r\n"
              "SUMMARY:Weekly (moved)\r\nLOCATION:https://zoom.us/j/3\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    collection.save_event(series)
    result = expand(sources.fetch(source_of(radicale, collection)).data or b"", days=30, calendar="team")
    assert [(w.key, w.join_at) for w in result.wanted] == [
        ("ical/team:weekly@2030-03-18T10:00:00Z", "2030-03-18T10:00:00Z"),
        ("ical/team:weekly@2030-03-25T10:00:00Z", "2030-03-26T12:00:00Z"),
        ("ical/team:weekly@2030-04-01T10:00:00Z", "2030-04-01T10:00:00Z"),
    ]


def test_a_wrong_password_is_one_line_without_the_password(radicale: Radicale, collection: Any) -> None:
    source = source_of(radicale, collection, password_env="CALDAV_PW")
    with pytest.raises(SourceError) as caught:
        sources.fetch(source, env={"CALDAV_PW": "wrong-guess-123"})
    message = caught.value.message
    assert message == (f"caldav+http://127.0.0.1:{radicale.port}/…/{collection.url.path.rstrip('/').split('/')[-1]}/"
                       ": the server refused the user or password (401)")
    assert "wrong-guess" not in message and PASSWORD not in message and not caught.value.transient


def test_a_missing_collection_and_a_stopped_server(radicale: Radicale) -> None:
    missing = sources.parse_source(f"caldav+{radicale.base}no-such-calendar/", user=USER,
                                   password_file=str(radicale.password_file))
    with pytest.raises(SourceError, match=r"no calendar collection at this address \(404\)"):
        sources.fetch(missing)
    gone = sources.parse_source(f"caldav+http://127.0.0.1:{free_port()}/{USER}/work/", user=USER,
                                password_file=str(radicale.password_file))
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        sources.fetch(gone, timeout_s=3)
    assert caught.value.transient and "cannot connect" in caught.value.message
    assert time.monotonic() - started < 5
