"""Recognise the meeting platform from a URL (Zoom, Google Meet, Microsoft Teams, Webex)."""

from __future__ import annotations

from botsched.core.validation import url_host

_PLATFORMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Zoom", ("zoom.us", "zoom.com", "zoomgov.com")),
    ("Google Meet", ("meet.google.com",)),
    ("Microsoft Teams", ("teams.microsoft.com", "teams.live.com")),
    ("Webex", ("webex.com",)),
)


def detect_platform(url: str) -> str | None:
    """The platform's name, or ``None`` for a URL of none of the known ones."""
    host = url_host(url) or ""
    for name, domains in _PLATFORMS:
        if any(host == domain or host.endswith("." + domain) for domain in domains):
            return name
    return None
