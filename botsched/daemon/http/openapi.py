"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``).

Built from data here, once: clients generate code from it and the tests fuzz the server
against it (schemathesis), so every status a route can answer is listed.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from botsched import __version__
from botsched.core import states

PREFIXES = ("", "/api/v1")
_TIME = {"type": "string", "description": "UTC ISO 8601 ending in Z"}
_ID = {"type": "string", "pattern": "^bot_[A-Za-z0-9]{16}$", "examples": ["bot_HiXYgjyeWmTVOaII"]}
_STATE = {"type": "string", "enum": list(states.ALL_STATES)}
_META = {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 50}

SCHEMAS: dict[str, Any] = {
    "Event": {
        "type": "object",
        "required": ["state", "at", "detail"],
        "properties": {"state": _STATE, "at": _TIME, "detail": {"type": ["string", "null"]},
                       "agent": {"type": "string", "description": "cluster mode only: the agent that recorded it"}},
    },
    "StreamEvent": {
        "description": "One line of GET /events: a state change of a bot.",
        "type": "object",
        "required": ["bot_id", "state", "at", "detail"],
        "properties": {"bot_id": _ID, "state": _STATE, "at": _TIME, "detail": {"type": ["string", "null"]},
                       "agent": {"type": "string", "description": "cluster mode only: the agent that recorded it"}},
    },
    "Bot": {
        "type": "object",
        "required": ["id", "meeting_url", "bot_name", "state", "join_at", "created_at", "updated_at",
                     "metadata", "deduplication_key", "events"],
        "properties": {
            "id": _ID,
            "meeting_url": {"type": "string"},
            "bot_name": {"type": "string"},
            "state": _STATE,
            "join_at": {"type": ["string", "null"], "description": "null for an ad-hoc bot; keeps its precision"},
            "created_at": _TIME,
            "updated_at": _TIME,
            "metadata": _META,
            "deduplication_key": {"type": ["string", "null"]},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "agent": {"type": ["string", "null"], "description": "cluster mode only: the agent that staged it"},
        },
    },
    "NewBot": {
        "type": "object",
        "required": ["meeting_url"],
        "additionalProperties": False,
        "properties": {
            "meeting_url": {"type": "string", "description": "http(s) URL with a host, at most 2,048 characters",
                            "examples": ["https://zoom.us/j/123456789"]},
            "bot_name": {"type": "string", "description": "1-100 printable characters"},
            "join_at": {"type": ["string", "null"], "description": "ISO 8601 (offset or Z; without: the daemon's "
                        "zone) or relative (+10m); in the future. Absent or null: an ad-hoc bot that starts now",
                        "examples": ["2030-06-16T16:24:00+0000"]},
            "metadata": _META,
            "deduplication_key": {"type": ["string", "null"]},
        },
    },
    "Reschedule": {
        "type": "object",
        "required": ["join_at"],
        "additionalProperties": False,
        "properties": {"join_at": {"type": "string", "examples": ["2030-06-16T17:00:00Z"]}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": ["invalid", "unauthorized", "forbidden", "not_found",
                                                    "method_not_allowed", "timeout", "conflict", "too_large",
                                                    "unprocessable",
                                                    "internal", "unavailable"]},
                "message": {"type": "string"},
            },
        }},
    },
}

_REASONS = {
    400: "invalid: bad input, a body that is not JSON",
    401: "unauthorized: over TCP without the right bearer token",
    403: "forbidden: on the Unix socket, a peer whose uid is not the daemon's",
    404: "not_found: no such bot (or path)",
    408: "timeout: the bot did not reach the state in time",
    409: "conflict: the bot's state does not allow this, or a duplicate deduplication_key",
    413: "too_large: a body (or bulk line) over 1 MiB",
    422: "unprocessable: the Idempotency-Key was used with another body",
    500: "internal: a bug",
    503: "unavailable: the database cannot be used, or the daemon is stopping",
}
_ALWAYS = (400, 401, 403, 500, 503)
_WARNINGS = {"Botsched-Warning": {"description": "one per warning (e.g. the join is sooner than the stage lead)",
                                  "schema": {"type": "string"}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(summary: str, ok: int, ok_schema: dict[str, Any], errors: tuple[int, ...], *,
        body: str | None = None, params: list[dict[str, Any]] | None = None,
        content: dict[str, Any] | None = None, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok): {"description": "success", "content": content or _json(ok_schema),
                                           "headers": {**_WARNINGS, **(headers or {})}}}
    for status in sorted({*_ALWAYS, *errors}):
        responses[str(status)] = {"description": _REASONS[status], "content": _json(_ref("Error"))}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if params:
        operation["parameters"] = params
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_BOT_ID = {"name": "id", "in": "path", "required": True, "schema": _ID}
_BOOL = {"type": "string", "enum": ["true", "false"]}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "a retry with the same key and body gets the first answer (kept 24 h)"}

ROUTES: dict[str, dict[str, Any]] = {
    "/bots": {
        "post": _op("Create a bot (scheduled with join_at, else ad-hoc)", 201, _ref("Bot"), (409, 413, 422),
                    body="NewBot", params=[_IDEMPOTENCY]),
        "get": _op("List bots, ordered by join_at (ad-hoc ones by created_at)", 200,
                   {"type": "array", "items": _ref("Bot")}, (),
                   params=[_query("state", _STATE, "only bots in this state (repeatable, or comma-separated)"),
                           _query("limit", {"type": "integer", "minimum": 0}, "at most this many (100; 0: all)")],
                   headers={"Botsched-More": {"description": "true when the limit left bots out",
                                              "schema": {"type": "string", "enum": ["true", "false"]}}}),
    },
    "/bots/bulk": {
        "post": {
            **_op("Create many bots from NDJSON lines, all or nothing", 201,
                  {"type": "array", "items": {"anyOf": [_ref("Bot"), _ID]}}, (413,),
                  params=[_query("return", {"type": "string", "enum": ["bots", "ids"]}, "bots (default) or ids")]),
            "requestBody": {"required": True, "content": {"application/x-ndjson": {
                "schema": {"type": "string", "description": "one NewBot object per line"}}}},
        },
    },
    "/bots/{id}": {
        "parameters": [_BOT_ID],
        "get": _op("One bot with its events", 200, _ref("Bot"), (404,)),
        "patch": _op("Reschedule a scheduled bot", 200, _ref("Bot"), (404, 409, 413), body="Reschedule"),
        "delete": _op("Cancel (delete) a scheduled bot; answers the bot as it was", 200, _ref("Bot"), (404, 409)),
    },
    "/bots/{id}/leave": {
        "parameters": [_BOT_ID],
        "post": _op("Ask a bot in a meeting to leave", 200, _ref("Bot"), (404, 409)),
    },
    "/bots/{id}/wait": {
        "parameters": [_BOT_ID],
        "get": _op("Long poll until the bot reaches a state (default: a terminal one)", 200, _ref("Bot"),
                   (404, 408, 409),
                   params=[_query("state", _STATE, "the state to wait for"),
                           _query("timeout", {"type": "number", "minimum": 0}, "give up after this many seconds")]),
    },
    "/events": {
        "get": _op("State changes; with follow=true a live NDJSON stream (flushed per event)", 200,
                   {"type": "array", "items": _ref("StreamEvent")}, (404,),
                   params=[_query("bot_id", _ID, "only this bot's"),
                           _query("follow", _BOOL, "stream live changes as NDJSON")],
                   content={**_json({"type": "array", "items": _ref("StreamEvent")}),
                            "application/x-ndjson": {"schema": {"anyOf": [_ref("StreamEvent"), _ref("Error")]}}}),
    },
    "/openapi.json": {
        "get": {"summary": "This document",
                "responses": {"200": {"description": "the OpenAPI 3.1 document",
                                      "content": _json({"type": "object"})},
                              "401": {"description": _REASONS[401], "content": _json(_ref("Error"))}}},
    },
}


def document() -> dict[str, Any]:
    paths = {prefix + path: item for prefix in PREFIXES for path, item in ROUTES.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "botsched", "version": __version__,
                 "description": "Schedule meeting bots. Served on the daemon's Unix socket (no token: the peer's "
                                "uid is checked) and, opted in, on TCP with a bearer token. Every path also "
                                "answers under /api/v1."},
        "servers": [{"url": "http://botsched"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "TCP only; `botsched http token` prints it"}},
        },
        "security": [{"bearer": []}],
    }


@functools.cache
def document_bytes() -> bytes:
    return json.dumps(document(), ensure_ascii=False, separators=(",", ":")).encode()
