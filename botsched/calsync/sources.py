"""Fetching a calendar: a file, an iCalendar feed over HTTP(S), or a CalDAV collection.

``fetch`` is synchronous: the daemon runs it in a worker thread (the ``caldav``
library is synchronous anyway, so one interface serves both). Feeds are fetched with
the standard library's ``urllib``: one GET with ``If-None-Match`` /
``If-Modified-Since``, which needs no session, no event loop in the worker and no
dependency; ``aiohttp`` stays the daemon's (webhooks, HTTP API).

The rules that matter to users:

- ``https://`` (and ``webcal://``, which is https) anywhere; ``http://`` only to a
  loopback address. Redirects obey the same rule, and a redirect to another host does
  not carry the password along.
- A ``304`` means unchanged: ``Fetched.data`` is ``None``.
- At most ``max_bytes`` (after gzip), within about ``timeout_s``.
- Passwords come from a file or an environment variable (``Source.password_file`` /
  ``password_env``), never from the URL or the command line; no message and no
  ``repr`` contains one, and messages show a feed's address shortened
  (``Source.display``), because a secret address is a password too.
- Every failure is a ``SourceError``: one line, with ``transient`` (worth retrying
  soon: timeouts, 5xx, 429) and a server's ``Retry-After``.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import ipaddress
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPMessage, HTTPResponse
from typing import IO, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from botsched import __version__
from botsched.core.errors import InvalidInput

DEFAULT_TIMEOUT_S = 30.0
#: The largest calendar accepted: a 20 MB export is years of a busy calendar.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_CALDAV_SCHEMES = {"caldav+https": "https", "caldav+http": "http"}


class SourceError(InvalidInput):
    """A calendar that could not be fetched, in one line."""

    def __init__(self, message: str, *, transient: bool = False, retry_after_us: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after_us = retry_after_us


@dataclass(frozen=True)
class Validators:
    """What the next poll sends to learn "unchanged" cheaply."""

    etag: str | None = None
    last_modified: str | None = None
    sync_token: str | None = None  # a CalDAV collection's

    def as_json(self) -> dict[str, str]:
        return {k: v for k, v in (("etag", self.etag), ("last_modified", self.last_modified),
                                  ("sync_token", self.sync_token)) if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Validators:
        data = data or {}
        return cls(*(str(data[k]) if data.get(k) is not None else None
                     for k in ("etag", "last_modified", "sync_token")))


@dataclass(frozen=True)
class Source:
    """Where a calendar comes from. ``location``: a path, or the URL fetched (for
    CalDAV without its ``caldav+``)."""

    kind: Literal["file", "http", "caldav"]
    location: str
    user: str | None = None
    password_file: str | None = field(default=None, repr=False)
    password_env: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """The source as messages and lists show it: a URL with neither its user, its
        query nor its middle (``https://calendar.google.com/…/basic.ics``)."""
        if self.kind == "file":
            return self.location
        parts = urlsplit(self.location)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host += f":{parts.port}"
        segments = [s for s in parts.path.split("/") if s]
        path = "/" if not segments else ("/" + segments[0] if len(segments) == 1 else "/…/" + segments[-1])
        if parts.path.endswith("/") and segments:
            path += "/"
        scheme = f"caldav+{parts.scheme}" if self.kind == "caldav" else parts.scheme
        return f"{scheme}://{host}{path}"


def parse_source(
    text: str, *, user: str | None = None, password_file: str | None = None, password_env: str | None = None,
) -> Source:
    """``calendar add SOURCE``: a path, ``https://``/``webcal://``, loopback ``http://``,
    or ``caldav+https://`` (loopback ``caldav+http://``)."""
    text = text.strip()
    if not text:
        raise InvalidInput("the calendar source is empty")
    if password_file is not None and password_env is not None:
        raise InvalidInput("give the password in a file or in an environment variable, not both")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not scheme:
        if user is not None or password_file is not None or password_env is not None:
            raise InvalidInput("a user or password is for an https or CalDAV source, not a file")
        return Source("file", os.path.abspath(os.path.expanduser(text)))
    kind: Literal["http", "caldav"]
    if scheme in _CALDAV_SCHEMES:
        kind, url = "caldav", _CALDAV_SCHEMES[scheme] + text[len(scheme):]
    elif scheme == "webcal":
        kind, url = "http", "https" + text[len(scheme):]
    elif scheme in ("https", "http"):
        kind, url = "http", text
    else:
        raise InvalidInput(f"unsupported calendar source {scheme}://: use a file, https://, webcal:// or "
                           "caldav+https://")
    parts = urlsplit(url)
    if parts.password is not None:
        raise InvalidInput("a password in the URL would be stored and shown: put it in a file "
                           "(--password-file) or an environment variable (--password-env)")
    _check_url(url)
    if parts.username is not None:  # https://me@host/...: the user, taken out of the URL
        user = user if user is not None else unquote(parts.username)
        url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    if kind == "caldav" and (password_file is not None or password_env is not None) and user is None:
        raise InvalidInput("a CalDAV password needs a user (--caldav-user)")
    return Source(kind, url, user, password_file, password_env)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str) -> None:
    """https anywhere, http only on loopback (a calendar says who to join: not in clear)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise InvalidInput(f"bad calendar URL: {exc}") from None
    host = parts.hostname or ""
    if not host:
        raise InvalidInput("bad calendar URL: it has no host")
    if parts.scheme == "http" and not _is_loopback(host):
        raise InvalidInput(f"plain http:// is only for this machine (localhost): use https://{host}/…")
    if parts.scheme not in ("https", "http"):
        raise InvalidInput(f"unsupported URL scheme {parts.scheme}://")


def password_of(source: Source, env: Mapping[str, str] | None = None) -> str | None:
    """The password, read when needed (a changed file counts at the next poll)."""
    if source.password_file is not None:
        try:
            with open(os.path.expanduser(source.password_file), encoding="utf-8") as handle:
                return handle.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise SourceError(f"cannot read the password file {source.password_file}: {why}") from None
    if source.password_env is not None:
        value = (os.environ if env is None else env).get(source.password_env)
        if value is None:
            raise SourceError(f"the environment variable {source.password_env} (the password) is not set")
        return value
    return None


@dataclass(frozen=True)
class Fetched:
    """The calendar's text, or ``None`` when the server said it is unchanged."""

    data: bytes | None
    validators: Validators

    @property
    def unchanged(self) -> bool:
        return self.data is None


def fetch(
    source: Source, validators: Validators = Validators(), *, timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES, env: Mapping[str, str] | None = None,
) -> Fetched:
    """The calendar's bytes (or "unchanged") and the validators for the next poll."""
    if source.kind == "file":
        return _fetch_file(source, max_bytes)
    if source.kind == "http":
        return _fetch_http(source, validators, timeout_s, max_bytes, env)
    return _fetch_caldav(source, validators, timeout_s, max_bytes, env)


def _size(count: int) -> str:
    return f"{count / 1024 / 1024:.1f} MB" if count >= 1024 * 1024 else f"{count // 1024} KB"


def _fetch_file(source: Source, max_bytes: int) -> Fetched:
    try:
        with open(source.location, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SourceError(f"cannot read {source.location}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise SourceError(f"{source.location} is larger than {_size(max_bytes)}")
    return Fetched(data, Validators())


# -- https feeds -------------------------------------------------------------------


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects under the same rules as the address itself; the password stays with
    its host."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: HTTPMessage, newurl: str) -> urllib.request.Request | None:
        try:
            _check_url(newurl)
        except InvalidInput as exc:
            raise SourceError(f"the server redirected to a refused address: {exc.message}") from None
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).hostname != urlsplit(req.full_url).hostname:
            new.remove_header("Authorization")
        return new


def _retry_after_us(value: str | None, now_s: float) -> int | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1_000_000
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0, int((when.timestamp() - now_s) * 1_000_000))
    return None


def _http_error(where: str, exc: urllib.error.HTTPError) -> SourceError:
    code = exc.code
    hint = {401: ": the user or password is wrong", 403: ": access refused (is the secret address still valid?)",
            404: ": no calendar at this address", 410: ": the calendar is gone"}.get(code, "")
    reason = (exc.reason or "").strip() if isinstance(exc.reason, str) else ""
    transient = code >= 500 or code in (408, 425, 429)
    retry = _retry_after_us(exc.headers.get("Retry-After") if exc.headers else None, time.time())
    return SourceError(f"{where}: the server answered {code}{' ' + reason if reason else ''}{hint}",
                       transient=transient, retry_after_us=retry)


def _opener(url: str) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_Redirects()]
    if _is_loopback(urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # never send this machine's feed through a proxy
    return urllib.request.build_opener(*handlers)


def _fetch_http(source: Source, validators: Validators, timeout_s: float, max_bytes: int,
                env: Mapping[str, str] | None) -> Fetched:
    where = source.display
    headers = {"User-Agent": f"botsched/{__version__}", "Accept": "text/calendar, */*;q=0.5",
               "Accept-Encoding": "gzip"}
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    password = password_of(source, env)
    if source.user is not None:
        token = base64.b64encode(f"{source.user}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(source.location, headers=headers, method="GET")
    deadline = time.monotonic() + timeout_s
    try:
        with _opener(source.location).open(request, timeout=timeout_s) as response:
            assert isinstance(response, HTTPResponse)
            data = _read_body(response, where, deadline, max_bytes)
            got = response.headers
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(None, Validators(exc.headers.get("ETag") or validators.etag,
                                            exc.headers.get("Last-Modified") or validators.last_modified))
        raise _http_error(where, exc) from None
    except urllib.error.URLError as exc:
        raise _network_error(where, exc.reason) from None
    except TimeoutError as exc:
        raise _network_error(where, exc) from None
    except OSError as exc:
        raise _network_error(where, exc) from None
    _looks_like_a_calendar(where, data, got.get("Content-Type"))
    return Fetched(data, Validators(got.get("ETag"), got.get("Last-Modified")))


def _network_error(where: str, reason: object) -> SourceError:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return SourceError(f"{where}: no answer in time (timed out)", transient=True)
    if isinstance(reason, SourceError):
        return reason
    if isinstance(reason, socket.gaierror):
        return SourceError(f"{where}: the host name cannot be resolved", transient=True)
    if isinstance(reason, OSError):
        text = reason.strerror or type(reason).__name__
        if isinstance(reason, ssl.SSLError):
            text = f"TLS failed ({reason.reason or reason})"
        return SourceError(f"{where}: {text}", transient=True)
    return SourceError(f"{where}: {' '.join(str(reason).split())}", transient=True)


def _read_body(response: HTTPResponse, where: str, deadline: float, max_bytes: int) -> bytes:
    """The body, gunzipped, bounded in size and (between reads) in time."""
    length = response.headers.get("Content-Length")
    gzipped = (response.headers.get("Content-Encoding") or "").strip().lower() in ("gzip", "x-gzip")
    if length and length.isdigit() and not gzipped and int(length) > max_bytes:
        raise SourceError(f"{where}: the calendar is larger than {_size(max_bytes)} ({_size(int(length))})")
    inflate = zlib.decompressobj(wbits=31) if gzipped else None
    parts: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise SourceError(f"{where}: the download took too long (timed out)", transient=True)
        chunk = response.read(_CHUNK)
        if not chunk:
            break
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, max_bytes + 1 - total)
            except zlib.error:
                raise SourceError(f"{where}: the server sent broken gzip data", transient=True) from None
            if inflate.unconsumed_tail:
                raise SourceError(f"{where}: the calendar is larger than {_size(max_bytes)}")
        total += len(chunk)
        if total > max_bytes:
            raise SourceError(f"{where}: the calendar is larger than {_size(max_bytes)}")
        parts.append(chunk)
    return b"".join(parts)


def _looks_like_a_calendar(where: str, data: bytes, content_type: str | None) -> None:
    """A login page or an error page instead of the calendar: say so, not "line 1"."""
    if b"BEGIN:VCALENDAR" in data[:65536].upper():
        return
    what = (content_type or "").split(";")[0].strip() or "no content type"
    raise SourceError(f"{where}: the server sent no calendar ({what}, {_size(len(data))}): is the address right?")


# -- CalDAV ------------------------------------------------------------------------


def _fetch_caldav(source: Source, validators: Validators, timeout_s: float, max_bytes: int,
                  env: Mapping[str, str] | None) -> Fetched:
    """Every event of the collection, as one text of several VCALENDARs (``expand``
    reads those); unchanged when the collection's ``sync-token`` is the one we had."""
    where = source.display
    try:
        from caldav.davclient import DAVClient
        from caldav.elements import dav
    except ImportError:
        raise SourceError("CalDAV needs the caldav package: pip install 'botsched[caldav]'") from None
    password = password_of(source, env)
    try:
        with DAVClient(url=source.location, username=source.user, password=password,
                       timeout=max(1, round(timeout_s))) as client:
            collection = client.calendar(url=source.location)  # type: ignore[no-untyped-call]
            token = collection.get_property(dav.SyncToken())
            token = str(token) if token else None
            if token is not None and token == validators.sync_token:
                return Fetched(None, validators)
            parts: list[bytes] = []
            total = 0
            for event in collection.get_events():
                text = event.data
                blob = text.encode("utf-8") if isinstance(text, str) else bytes(text or b"")
                total += len(blob) + 2
                if total > max_bytes:
                    raise SourceError(f"{where}: the calendar is larger than {_size(max_bytes)}")
                parts.append(blob.rstrip(b"\r\n"))
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001  # caldav and its HTTP client raise many kinds: one line each
        raise _caldav_error(where, exc, password) from None
    if not parts:  # an empty collection is a valid, empty calendar
        parts.append(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//botsched//empty//EN\r\nEND:VCALENDAR")
    return Fetched(b"\r\n".join(parts) + b"\r\n", Validators(sync_token=token))


def _caldav_error(where: str, exc: BaseException, password: str | None) -> SourceError:
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if password:
        text = text.replace(password, "***").replace(quote(password, safe=""), "***")
    if name == "AuthorizationError" or " 401" in text or "Unauthorized" in text:
        return SourceError(f"{where}: the server refused the user or password (401)")
    if name == "NotFoundError" or " 404" in text:
        return SourceError(f"{where}: no calendar collection at this address (404)")
    transient = not name.endswith(("AuthorizationError", "NotFoundError")) and (
        "timeout" in text.lower() or "timed out" in text.lower() or "connect" in text.lower()
        or " 5" in text or isinstance(exc, OSError))
    if "timed out" in text.lower() or "timeout" in name.lower():
        return SourceError(f"{where}: no answer in time (timed out)", transient=True)
    if "onnection" in name or "refused" in text.lower():
        return SourceError(f"{where}: cannot connect to the server", transient=True)
    text = text if len(text) <= 200 else text[:199] + "…"
    return SourceError(f"{where}: CalDAV failed: {name}{': ' + text if text else ''}", transient=transient)
