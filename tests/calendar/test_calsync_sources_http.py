"""Fetching an iCalendar feed from a real HTTP server on loopback (``http.server`` in a
thread): validators and 304s, a feed that changes between polls, errors as one line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from calsync_helpers import NOW_US, calendar, expand
from calsync_servers import Server

from botsched import calsync
from botsched.calsync import follow, sources
from botsched.calsync.sources import SourceError, Validators

ZOOM = "https://zoom.us/j/111"


def event(uid: str, start: str, summary: str | None = None) -> str:
    return f"UID:{uid}\nSUMMARY:{summary or uid}\nDTSTART:{start}\nDURATION:PT30M\nLOCATION:{ZOOM}"




@pytest.fixture
def server() -> Iterator[Server]:
    one = Server()
    yield one
    one.close()


def test_a_feed_followed_across_polls(server: Server) -> None:
    """Moved, added and removed meetings reach the plan; a 304 changes nothing; the
    validators of one poll go out with the next."""
    server.feed.body = calendar(event("a", "20300318T100000Z"), event("b", "20300319T100000Z")).encode()
    source = sources.parse_source(server.url())
    first = sources.fetch(source)
    assert first.validators == Validators('"v1"', "Mon, 17 Mar 2030 10:00:00 GMT")
    assert "if-none-match" not in server.feed.requests[0]
    bots = [{"id": f"bot_{w.key}", "deduplication_key": w.key, "state": "scheduled", "join_at": w.join_at,
             "meeting_url": w.meeting_url} for w in expand(first.data or b"", calendar="work").wanted]
    assert {b["deduplication_key"] for b in bots} == {"ical/work:a", "ical/work:b"}

    again = sources.fetch(source, first.validators)
    assert again.unchanged and again.data is None and again.validators == first.validators
    assert server.feed.requests[-1]["if-none-match"] == '"v1"'
    assert server.feed.requests[-1]["if-modified-since"] == "Mon, 17 Mar 2030 10:00:00 GMT"

    # a moved, b removed, c added
    server.feed.body = calendar(event("a", "20300318T150000Z"), event("c", "20300320T090000Z")).encode()
    server.feed.etag = '"v2"'
    changed = sources.fetch(source, again.validators)
    assert changed.validators.etag == '"v2"'
    result = expand(changed.data or b"", calendar="work")
    actions = {(a.action, a.key) for a in calsync.plan(result.wanted, bots, NOW_US, skipped=result.skipped,
                                                        calendar="work")}
    assert actions == {("reschedule", "ical/work:a"), ("cancel", "ical/work:b"), ("create", "ical/work:c")}


def test_if_modified_since_alone_gives_304(server: Server) -> None:
    server.feed.body = calendar(event("a", "20300318T100000Z")).encode()
    fetched = sources.fetch(sources.parse_source(server.url()), Validators(last_modified=server.feed.last_modified))
    assert fetched.unchanged


def test_server_errors_are_transient_with_retry_after(server: Server) -> None:
    server.feed.status, server.feed.headers = 503, {"Retry-After": "120"}
    with pytest.raises(SourceError) as caught:
        sources.fetch(sources.parse_source(server.url()))
    error = caught.value
    assert error.message == f"http://127.0.0.1:{server.port}/…/basic.ics: the server answered 503 Service Unavailable"
    assert error.transient and error.retry_after_us == 120_000_000
    assert "private-abc123" not in error.message  # the secret part of the address is not shown

    server.feed.status, server.feed.headers = 500, {}
    with pytest.raises(SourceError) as caught:
        sources.fetch(sources.parse_source(server.url()))
    assert "answered 500" in caught.value.message and caught.value.transient


def test_a_500_then_recovery_backs_off_and_recovers(server: Server) -> None:
    """The polling policy around a real failing feed: back off, then back to ``every``."""
    every = follow.parse_every("10m")
    state = follow.first_state(NOW_US)
    source = sources.parse_source(server.url())
    server.feed.body = calendar(event("a", "20300318T100000Z")).encode()
    now = NOW_US
    server.feed.status = 500
    waits = []
    for _ in range(3):
        assert follow.is_due(state, now, every)
        try:
            sources.fetch(source, state.validators)
        except SourceError as exc:
            state = follow.failed(state, now, every, exc.message, exc.retry_after_us)
        waits.append(state.next_poll_us - now)
        now = state.next_poll_us
    assert waits == [every, 2 * every, 4 * every] and state.failures == 3
    assert state.last_error is not None and "answered 500" in state.last_error
    server.feed.status = 200
    fetched = sources.fetch(source, state.validators)
    state = follow.succeeded(state, now, every, fetched.validators, changed=not fetched.unchanged)
    assert (state.failures, state.next_poll_us, state.last_success_us) == (0, now + every, now)
    assert state.last_error_us is not None and not follow.failing(state)


@pytest.mark.parametrize(("status", "words"), [(404, "no calendar at this address"),
                                               (403, "secret address still valid"),
                                               (401, "user or password is wrong")])
def test_client_errors_are_not_transient(server: Server, status: int, words: str) -> None:
    server.feed.status = status
    with pytest.raises(SourceError) as caught:
        sources.fetch(sources.parse_source(server.url()))
    assert words in caught.value.message and not caught.value.transient
    assert "\n" not in caught.value.message


def test_gzip_is_read_and_bounded(server: Server) -> None:
    server.feed.body = calendar(event("a", "20300318T100000Z")).encode()
    server.feed.gzip = True
    source = sources.parse_source(server.url())
    assert sources.fetch(source).data == server.feed.body
    server.feed.body = calendar(*(event(f"e{i}", "20300318T100000Z") for i in range(2000))).encode()
    with pytest.raises(SourceError, match="larger than 64 KB"):
        sources.fetch(source, max_bytes=64 * 1024)  # a small gzip, a big calendar: still refused


def test_size_is_bounded_by_content_length(server: Server) -> None:
    server.feed.body = b"BEGIN:VCALENDAR\r\n" + b"X" * 200_000
    with pytest.raises(SourceError, match="larger than 97 KB"):
        sources.fetch(sources.parse_source(server.url()), max_bytes=100_000)


def test_a_stalled_download_times_out_in_bounded_time(server: Server) -> None:
    server.feed.body = calendar(event("a", "20300318T100000Z")).encode()
    server.feed.stall_s = 3
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        sources.fetch(sources.parse_source(server.url()), timeout_s=0.5)
    assert time.monotonic() - started < 2
    assert "timed out" in caught.value.message and caught.value.transient


def test_a_login_page_is_not_a_calendar(server: Server) -> None:
    server.feed.body = b"<html><body>Please sign in</body></html>"
    with pytest.raises(SourceError, match=r"the server sent no calendar \(text/calendar, 0 KB\): is the address"):
        sources.fetch(sources.parse_source(server.url()))


def test_nothing_listening_is_one_transient_line() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as probe:
        port = probe.server_address[1]  # free once closed
    with pytest.raises(SourceError) as caught:
        sources.fetch(sources.parse_source(f"http://127.0.0.1:{port}/x.ics"), timeout_s=2)
    assert caught.value.transient and caught.value.message.startswith(f"http://127.0.0.1:{port}/x.ics: ")


def test_basic_auth_from_a_file_never_shown_and_not_carried_to_another_host(server: Server, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2-pw\n")
    server.feed.body = calendar(event("a", "20300318T100000Z")).encode()
    source = sources.parse_source(server.url(), user="me", password_file=str(secret))
    assert "hunter2" not in repr(source)
    sources.fetch(source)
    assert server.feed.requests[-1]["authorization"] == "Basic bWU6aHVudGVyMi1wdw=="  # me:hunter2-pw
    # a redirect on the same host keeps it; to another host name (localhost, not 127.0.0.1) drops it
    server.feed.redirects = {"/cal/private-abc123/basic.ics": server.url("/same.ics"),
                             "/same.ics": server.url("/moved.ics", host="localhost")}
    server.feed.requests.clear()
    assert sources.fetch(source).data == server.feed.body
    assert [(r["path"], "authorization" in r) for r in server.feed.requests] == [
        ("/cal/private-abc123/basic.ics", True), ("/same.ics", True), ("/moved.ics", False)]


def test_password_from_the_environment(server: Server) -> None:
    server.feed.body = calendar(event("a", "20300318T100000Z")).encode()
    source = sources.parse_source(server.url(), user="me", password_env="FEED_PW")
    with pytest.raises(SourceError, match="environment variable FEED_PW"):
        sources.fetch(source, env={})
    sources.fetch(source, env={"FEED_PW": "pw"})
    assert server.feed.requests[-1]["authorization"] == "Basic bWU6cHc="


def test_a_redirect_to_plain_http_elsewhere_is_refused(server: Server) -> None:
    server.feed.redirects = {"/cal/private-abc123/basic.ics": "http://calendar.example.com/basic.ics"}
    with pytest.raises(SourceError, match="redirected to a refused address: plain http:// is only for this machine"):
        sources.fetch(sources.parse_source(server.url()))


@pytest.mark.parametrize(("text", "kind", "location", "shown"), [
    ("webcal://p01-calendars.icloud.com/published/2/MTIz", "http", "https://p01-calendars.icloud.com/published/2/MTIz",
     "https://p01-calendars.icloud.com/…/MTIz"),
    ("https://calendar.google.com/calendar/ical/me%40example.com/private-0123abcd/basic.ics?x=1", "http",
     "https://calendar.google.com/calendar/ical/me%40example.com/private-0123abcd/basic.ics?x=1",
     "https://calendar.google.com/…/basic.ics"),
    ("caldav+https://me@cloud.example.com/remote.php/dav/calendars/me/personal/", "caldav",
     "https://cloud.example.com/remote.php/dav/calendars/me/personal/", "caldav+https://cloud.example.com/…/personal/"),
    ("http://[::1]:8080/a.ics", "http", "http://[::1]:8080/a.ics", "http://[::1]:8080/a.ics"),
])
def test_sources_are_read_and_shown_without_secrets(text: str, kind: str, location: str, shown: str) -> None:
    source = sources.parse_source(text)
    assert (source.kind, source.location, source.display) == (kind, location, shown)
    if "me@" in text:
        assert source.user == "me"


@pytest.mark.parametrize(("text", "words"), [
    ("http://calendar.example.com/a.ics", "plain http:// is only for this machine"),
    ("https://me:pw@cloud.example.com/a.ics", "a password in the URL"),
    ("ftp://example.com/a.ics", "unsupported calendar source ftp://"),
    ("https:///a.ics", "it has no host"),
])
def test_bad_sources_are_refused(text: str, words: str) -> None:
    with pytest.raises(calsync.ics.InvalidInput, match=words):
        sources.parse_source(text)


def test_a_file_source(tmp_path: Path) -> None:
    path = tmp_path / "work.ics"
    path.write_text(calendar(event("a", "20300318T100000Z")))
    assert sources.fetch(sources.parse_source(str(path))).data == path.read_bytes()
    with pytest.raises(SourceError, match=r"cannot read .*missing\.ics: No such file"):
        sources.fetch(sources.parse_source(str(tmp_path / "missing.ics")))
