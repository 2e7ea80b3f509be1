"""Schemathesis hooks for ``test_http_daemon`` (``SCHEMATHESIS_HOOKS=st_hooks``).

- An ``application/x-ndjson`` serializer: the bulk create body is one JSON object per line.
- This venv's ``urllib3`` is urllib3-future (caldav -> niquests installs it over urllib3),
  whose pool container has no ``keys()``; schemathesis counts pooled connections with it
  only to decide whether to resend a request dropped on a stale keep-alive connection.
  Counting through ``len`` keeps that working instead of failing every request.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis.transport import requests as st_requests

_original_count = st_requests._count_opened_connections


def _count_opened_connections(session: Any) -> int:
    try:
        return int(_original_count(session))
    except AttributeError:
        return 0


st_requests._count_opened_connections = _count_opened_connections


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)
