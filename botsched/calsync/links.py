"""Finding an occurrence's meeting link among its properties (issue 16 item 7).

A platform's link wins wherever it is; a link of any other site counts only in a
conference property, never as a ``URL`` (usually the event's web page).
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from botsched.core.errors import InvalidInput
from botsched.core.platforms import detect_platform
from botsched.core.validation import url_host, validate_meeting_url

_URL = re.compile(r"""https?://[^\s<>"'`{}|\\^\[\]]+""", re.IGNORECASE)
_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_LOOKS_HTML = re.compile(
    r"<(?:a|p|br|div|span|html|body|b|i|u|table|td|tr|font|strong|em)\b[^>]*>|</[a-z]+>", re.IGNORECASE
)
_MEET_CODE = re.compile(r"^/(?:[a-z]{3}-[a-z]{4}-[a-z]{3}|lookup/)", re.IGNORECASE)

#: Properties whose value is the meeting's link by definition, best first.
CONFERENCE_PROPERTIES = ("X-GOOGLE-CONFERENCE", "CONFERENCE", "X-MICROSOFT-SKYPETEAMSMEETINGURL")
#: Properties that may hold a meeting link among other things (``URL`` is usually the
#: event's web page), in the order they are looked at.
OTHER_PROPERTIES = ("URL", "LOCATION", "DESCRIPTION", "X-ALT-DESC")
#: Meeting platforms besides the four the daemon knows (whose links it takes "as a
#: custom platform"): a link to one of these hosts joins a call.
LINK_PROPERTIES = (*CONFERENCE_PROPERTIES, *OTHER_PROPERTIES)
_OTHER_MEETING_HOSTS = (
    "meet.jit.si", "8x8.vc", "whereby.com", "gotomeeting.com", "gotomeet.me", "meet.goto.com", "bluejeans.com",
    "chime.aws", "join.skype.com", "meet.lync.com", "meetings.ringcentral.com", "v.ringcentral.com",
    "meetings.dialpad.com", "call.lifesizecloud.com", "meeting.tencent.com", "voovmeeting.com", "app.livestorm.co",
)
_OTHER_MEETING_PREFIXES = ("jitsi.", "meeting.zoho.")


def _values(component: Any, name: str) -> list[str]:
    value = component.get(name)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(item) for item in items if str(item).strip()]


def links_in_text(text: str) -> list[str]:
    """Every http(s) link in plain text or HTML (hrefs first), entities unescaped."""
    found: list[str] = []
    if _LOOKS_HTML.search(text):
        for double, single in _HREF.findall(text):
            found.extend(_URL.findall(html.unescape(double or single)))
        text = html.unescape(_TAG.sub(" ", text))
    elif "&amp;" in text or "&#" in text:
        text = html.unescape(text)
    found.extend(_URL.findall(text))
    links: list[str] = []
    for raw in found:
        link = _unwrap(_trim(raw))
        if link and link not in links:
            links.append(link)
    return links


def _trim(link: str) -> str:
    """Drop sentence punctuation and an unbalanced closing bracket from a link's end."""
    while link and link[-1] in ".,;:!?*'\")":
        if link[-1] == ")" and link.count("(") >= link.count(")"):
            break
        link = link[:-1]
    return link


def _unwrap(link: str) -> str:
    """Google redirect (``google.com/url?q=``) and Outlook Safe Links point elsewhere."""
    try:
        parts = urlsplit(link)
        host = (parts.hostname or "").lower()
    except ValueError:
        return link
    if host in ("google.com", "www.google.com") and parts.path == "/url":
        target = parse_qs(parts.query).get("q") or parse_qs(parts.query).get("url")
    elif host.endswith("safelinks.protection.outlook.com"):
        target = parse_qs(parts.query).get("url")
    else:
        return link
    return target[0] if target and _URL.fullmatch(target[0]) else link


def meeting_platform(link: str) -> str | None:
    """The meeting platform a link belongs to (Zoom, Google Meet, Microsoft Teams,
    Webex, or ``"other"`` for Jitsi, Whereby, GoTo and the like), or ``None``."""
    platform = detect_platform(link)
    if platform is not None:
        return platform
    host = url_host(link) or ""
    if host.startswith(_OTHER_MEETING_PREFIXES):
        return "other"
    for known in _OTHER_MEETING_HOSTS:
        if host == known or host.endswith("." + known):
            return "other"
    return None


def _join_score(link: str, platform: str) -> int:
    """2 for a link that joins a meeting, 1 for another link of the platform, 0 for help pages."""
    parts = urlsplit(link)
    path = parts.path or "/"
    lowered = path.lower()
    name = platform.lower()  # "zoom", "google meet", "microsoft teams", "webex", "other"
    if "zoom" in name:
        return 2 if re.match(r"^/(?:j|my|w|s|wc/join)/", lowered) else 1
    if "meet" in name and "google" in name.replace("_", " "):
        return 2 if _MEET_CODE.match(path) else (0 if lowered in ("/", "") else 1)
    if "teams" in name:
        if "meetingoptions" in lowered:
            return 0
        return 2 if ("/meetup-join/" in lowered or lowered.startswith("/meet/")) else 1
    if "webex" in name:
        return 2 if re.search(r"/(?:meet|join|j\.php|wbxmjs/joinservice)", lowered) else 1
    return 1


def _valid(link: str) -> bool:
    try:
        validate_meeting_url(link)
    except InvalidInput:
        return False
    return True


def find_meeting_url(component: Any) -> str | None:
    """The occurrence's meeting link, or ``None``.

    A link of a meeting platform (Zoom, Meet, Teams, Webex, Jitsi, Whereby, GoTo, ...)
    wins wherever it is — conference properties, ``URL``, ``LOCATION``, the plain or
    HTML ``DESCRIPTION`` — join links before help pages. A link of any other site
    counts only in a conference property (``X-GOOGLE-CONFERENCE``, ``CONFERENCE``,
    Teams' own): a ``URL`` is usually the event's web page (a meetup, a festival
    programme), and links in a description are agendas and documents.
    """
    candidates: list[tuple[str, bool]] = []  # (link, from a conference property)
    for name in CONFERENCE_PROPERTIES:
        for value in _values(component, name):
            candidates.extend((link, True) for link in links_in_text(value))
    for name in OTHER_PROPERTIES:
        for value in _values(component, name):
            candidates.extend((link, False) for link in links_in_text(value))
    best: tuple[int, int, str] | None = None
    for order, (link, _) in enumerate(candidates):
        platform = meeting_platform(link)
        if platform is None or not _valid(link):
            continue
        rank = (_join_score(link, platform), -order, link)
        if best is None or rank[:2] > best[:2]:
            best = rank
    if best is not None and best[0] > 0:
        return best[2]
    for link, conference in candidates:
        if conference and _valid(link):
            return link
    return best[2] if best is not None else None


# -- attendees ---------------------------------------------------------------------
