"""The HTTP API's aiohttp application (SPEC §9).

Handlers only translate: an HTTP request becomes one call on the service (the same
``method(args) -> (result, warnings)`` the JSON-lines protocol calls, so both share every
rule), and a ``BotschedError`` becomes ``{"error": {"code", "message"}}`` with its status.
Streams (``events``, ``wait``, bulk create) go through the ``Streams`` hooks.

Choices the SPEC leaves open, made here (the OpenAPI document says the same):
- Warnings (e.g. "joins sooner than the stage lead") travel in ``Botsched-Warning``
  headers, one per warning, so bodies keep §3's shape.
- ``GET /bots`` answers an array; ``Botsched-More: true`` says the limit cut it short.
- ``GET /events`` without ``follow`` answers a JSON array; with it, NDJSON that ends when
  the bot is cancelled, or with one ``{"error": ...}`` line when the daemon stops.
- ``wait`` that times out is ``408`` (code ``timeout``); a bot that ended in another
  terminal state is ``409``.
- A body's trailing comma before ``}`` or ``]`` is tolerated: the seed document's create
  body has one, and it must work as written. Anything else that is not JSON is ``400``.
- An ``Idempotency-Key`` reused with a different body is ``422`` (see ``idempotency``).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from botsched.core import protocol
from botsched.core.errors import BotschedError, InvalidInput
from botsched.daemon.http import openapi
from botsched.daemon.http.idempotency import (
    MAX_KEY_LEN,
    Answer,
    IdempotencyCache,
    KeyMismatch,
    fingerprint,
)

log = logging.getLogger("botsched.daemon.http")

Result = tuple[Any, list[str]]
#: Request bodies (and each line of a bulk body) are at most this big.
MAX_BODY = 1 << 20
PREFIXES = ("", "/api/v1")
NDJSON = "application/x-ndjson"
#: How many times a trailing comma is forgiven in one body.
_MAX_COMMA_FIXES = 64

#: HTTP status of each botsched error code.
STATUS_OF_CODE = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "timeout": 408,
    "conflict": 409,
    "too_large": 413,
    "unprocessable": 422,
    "internal": 500,
    "unavailable": 503,
    "refused": 503,
}


class Service(Protocol):
    """The request-reply methods the API calls (``BotService`` has them)."""

    def create(self, args: dict[str, Any]) -> Result: ...
    def show(self, args: dict[str, Any]) -> Result: ...
    def list_bots(self, args: dict[str, Any]) -> Result: ...
    def reschedule(self, args: dict[str, Any]) -> Result: ...
    def cancel(self, args: dict[str, Any]) -> Result: ...
    def leave(self, args: dict[str, Any]) -> Result: ...
    # the durable writes with their commit on the writer thread (group commit, SPEC §5's rules)
    async def create_async(self, args: dict[str, Any]) -> Result: ...
    async def reschedule_async(self, args: dict[str, Any]) -> Result: ...
    async def cancel_async(self, args: dict[str, Any]) -> Result: ...


class Streams(Protocol):
    """The long-lived operations, which need the daemon's event hub (``streams.LiveStreams``)."""

    def events(self, bot_id: str | None, follow: bool) -> contextlib.AbstractAsyncContextManager[
            AsyncIterator[dict[str, Any]]]:
        """Entering checks the bot (``NotFound``) and subscribes; the iterator yields past
        events, then with ``follow`` live ones until the bot is deleted. ``DaemonUnavailable``
        mid-stream when the daemon stops or the reader fell behind."""
        ...

    async def wait(self, bot_id: str, state: str | None, timeout: float | None) -> dict[str, Any]:
        """The bot once it reached ``state`` (default: a terminal state); ``WaitTimeout``,
        ``Conflict`` (ended elsewhere), ``NotFound`` (cancelled meanwhile)."""
        ...

    async def create_many(self, chunks: AsyncIterator[list[dict[str, Any]]], want_bots: bool,
                          commit: Callable[[], bool]) -> Result:
        """All or nothing; items carry their ``line``. ``commit()`` is asked once all chunks
        arrived: ``False`` (the caller found bad lines itself) only validates."""
        ...


class ApiError(BotschedError):
    """An HTTP-level error (auth, size, method) with its own status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def _status(exc: BotschedError) -> int:
    return exc.status if isinstance(exc, ApiError) else STATUS_OF_CODE.get(exc.code, 500)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def error_body(code: str, message: str) -> bytes:
    return dumps({"error": {"code": code, "message": message}})


def _warning_headers(warnings: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    # header values cannot hold line breaks (or non-Latin-1 text): one line each, escaped
    return [("Botsched-Warning", " ".join(w.split()).encode("ascii", "backslashreplace").decode())
            for w in warnings]


def json_response(status: int, body: bytes, warnings: list[str] | tuple[str, ...] = (),
                  extra: dict[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=body, content_type="application/json")
    for name, value in _warning_headers(warnings):
        response.headers.add(name, value)
    for name, value in (extra or {}).items():
        response.headers[name] = value
    return response


# -- bodies -----------------------------------------------------------------------------


def parse_json(raw: bytes) -> Any:
    """A body as JSON whatever its content type; ``InvalidInput`` for anything else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the request body is not UTF-8 text") from None
    for _ in range(_MAX_COMMA_FIXES):
        try:
            value = json.loads(text)
            break
        except json.JSONDecodeError as exc:
            fixed = _without_trailing_comma(text, exc.pos)
            if fixed is None:
                raise InvalidInput(f"the request body is not JSON: {exc.msg} at line {exc.lineno} "
                                   f"column {exc.colno}") from None
            text = fixed
        except RecursionError:
            raise InvalidInput("the request body is not JSON: nested too deeply") from None
    else:
        raise InvalidInput("the request body is not JSON: too many trailing commas")
    if protocol.has_surrogate_escape(raw):
        protocol.encode({"body": value})  # a lone surrogate ("\ud800") is not text: InvalidInput
    return value


def _without_trailing_comma(text: str, pos: int) -> str | None:
    """``text`` without the comma that makes the parser fail at ``pos`` (a ``}`` or ``]``
    right after ``,`` and whitespace), or ``None`` when the error is another one."""
    if pos >= len(text) or text[pos] not in "}]":
        return None
    before = text[:pos].rstrip()
    if not before.endswith(","):
        return None
    return before[:-1] + text[len(before):]


async def read_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body is an empty object)."""
    raw = await request.read()  # over the app's client_max_size: HTTPRequestEntityTooLarge (413)
    if not raw.strip():
        return {}
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise InvalidInput("the request body must be a JSON object")
    return value


# -- query parameters -------------------------------------------------------------------


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise InvalidInput(f"{name} must be true or false, not {value!r}")


def _number(request: web.Request, name: str, kind: Callable[[str], Any]) -> Any:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, not {value!r}") from None


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


# -- the application ---------------------------------------------------------------------


class Api:
    """The handlers, bound to one service, its streams and a token source."""

    def __init__(self, service: Service, streams: Streams, token: Callable[[], str | None],
                 idempotency: IdempotencyCache | None = None) -> None:
        self.service = service
        self.streams = streams
        self.token = token
        self.idempotency = idempotency or IdempotencyCache()

    # -- request-reply ----------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        if "line" in body:  # bulk bookkeeping, not an API field
            raise InvalidInput("unknown field(s): line")
        key = request.headers.get("Idempotency-Key")
        if key is None:  # the commit on the writer thread (group commit), the loop free meanwhile
            result, warnings = await self.service.create_async(body)
            return json_response(201, dumps(result), warnings)
        if not key or len(key) > MAX_KEY_LEN or not key.isprintable():
            raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_LEN} printable characters")
        body_print = fingerprint(body)
        try:
            first = self.idempotency.lookup(key, body_print)
        except KeyMismatch:
            raise ApiError(422, "unprocessable",
                           "this Idempotency-Key was already used with a different request body") from None
        if first is not None:
            return json_response(first.status, first.body, first.warnings, {"Idempotent-Replayed": "true"})
        # no await from the lookup to remember(): a concurrent retry cannot slip in between
        try:
            result, warnings = self.service.create(body)
            answer = Answer(201, dumps(result), tuple(warnings))
        except BotschedError as exc:
            answer = Answer(_status(exc), error_body(exc.code, exc.message), ())
        self.idempotency.remember(key, body_print, answer)
        return json_response(answer.status, answer.body, answer.warnings)

    async def show(self, request: web.Request) -> web.Response:
        return self._reply(self.service.show({"id": request.match_info["id"]}))

    async def list(self, request: web.Request) -> web.Response:
        wanted = [s for value in request.query.getall("state", []) for s in value.split(",") if s]
        args: dict[str, Any] = {"states": wanted}
        limit = _number(request, "limit", int)
        if limit is not None:
            args["limit"] = limit
        result, warnings = self.service.list_bots(args)
        return json_response(200, dumps(result["bots"]), warnings,
                             {"Botsched-More": "true" if result["more"] else "false"})

    async def reschedule(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        if set(body) - {"join_at"}:
            raise InvalidInput(f"PATCH changes only join_at, not {', '.join(sorted(set(body) - {'join_at'}))}")
        if "join_at" not in body:
            raise InvalidInput("PATCH needs a join_at")
        return self._reply(await self.service.reschedule_async({"id": request.match_info["id"],
                                                                "join_at": body["join_at"]}))

    async def cancel(self, request: web.Request) -> web.Response:
        bot_id = request.match_info["id"]
        # show, then delete: only a scheduled bot is deleted, so the bot shown is the one deleted
        # (a change in between, staged say, makes the cancel a conflict)
        bot, _ = self.service.show({"id": bot_id})
        _, warnings = await self.service.cancel_async({"id": bot_id})
        return json_response(200, dumps(bot), warnings)

    async def leave(self, request: web.Request) -> web.Response:
        return self._reply(self.service.leave({"id": request.match_info["id"]}))

    def _reply(self, outcome: Result, status: int = 200) -> web.Response:
        result, warnings = outcome
        return json_response(status, dumps(result), warnings)

    # -- streams ------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        follow = _flag(request, "follow")
        async with self.streams.events(request.query.get("bot_id"), follow) as events:
            if not follow:
                return json_response(200, dumps([event async for event in events]))
            response = web.StreamResponse(status=200, headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
            await response.prepare(request)
            try:
                async for event in events:
                    await response.write(dumps(event) + b"\n")  # one chunk per event: flushed
            except BotschedError as exc:  # the status is sent already: say why in the stream
                await response.write(error_body(exc.code, exc.message) + b"\n")
            await response.write_eof()
            return response

    async def wait(self, request: web.Request) -> web.Response:
        timeout = _number(request, "timeout", _seconds)
        bot = await self.streams.wait(request.match_info["id"], request.query.get("state"), timeout)
        return json_response(200, dumps(bot))

    async def bulk(self, request: web.Request) -> web.Response:
        want = request.query.get("return", "bots")
        if want not in ("bots", "ids"):
            raise InvalidInput(f"return must be bots or ids, not {want!r}")
        problems: list[str] = []
        try:
            result, warnings = await self.streams.create_many(
                _bulk_items(request, problems), want == "bots", lambda: not problems)
        except InvalidInput as exc:
            if not problems:
                raise
            problems += [line for line in exc.message.splitlines() if line.startswith("line ")]
        if problems:
            problems.sort(key=_line_number)
            raise InvalidInput("\n".join([*problems, f"{len(problems)} invalid line(s); nothing was created"]))
        if result is None or not result:
            raise InvalidInput("no bots to create (the body has no JSON lines)")
        return json_response(201, dumps(result), warnings)

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(200, openapi.document_bytes())

    # -- middlewares --------------------------------------------------------------------

    @web.middleware
    async def errors(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Every error as ``{"error": {...}}`` with its status; never a traceback."""
        try:
            return await handler(request)
        except BotschedError as exc:
            headers = exc.headers if isinstance(exc, ApiError) else {}
            return json_response(_status(exc), error_body(exc.code, exc.message), extra=headers)
        except web.HTTPException as exc:
            return _from_http_exception(exc)
        except (ConnectionError, OSError) as exc:  # the client went away mid-answer
            log.info("HTTP %s %s: connection lost (%s)", request.method, request.path, exc)
            raise
        except Exception as exc:  # a bug: logged, answered as internal
            log.exception("HTTP %s %s failed", request.method, request.path)
            return json_response(500, error_body("internal", f"internal error: {type(exc).__name__}"))

    @web.middleware
    async def auth(self, request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """TCP requests need the bearer token; Unix-socket peers were checked by uid."""
        if not _over_unix_socket(request):
            expected = self.token()
            given = request.headers.get("Authorization", "")
            scheme, _, credentials = given.partition(" ")
            if (expected is None or scheme.lower() != "bearer"
                    or not hmac.compare_digest(credentials.strip().encode(), expected.encode())):
                log.warning("refused an HTTP request from %s: %s %s, %s", request.remote, request.method,
                            request.path, "no bearer token" if not given else "wrong token")
                raise ApiError(401, "unauthorized", "this request needs Authorization: Bearer <token> "
                               "(botsched http token prints it)", {"WWW-Authenticate": 'Bearer realm="botsched"'})
        return await handler(request)


def _over_unix_socket(request: web.Request) -> bool:
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    if status == 404:
        code, message = "not_found", "no such path (see /openapi.json)"
    elif status == 405:
        code, message = "method_not_allowed", f"method not allowed here (allowed: {exc.headers.get('Allow', '')})"
    elif status == 413:
        code, message = "too_large", f"the request body is over {MAX_BODY} bytes"
    else:
        code, message = STATUS_OF_CODE_INVERSE.get(status, "invalid" if status < 500 else "internal"), exc.reason
    extra = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return json_response(status, error_body(code, message), extra=extra)


STATUS_OF_CODE_INVERSE = {status: code for code, status in STATUS_OF_CODE.items() if code != "refused"}


async def _bulk_items(request: web.Request, problems: list[str]) -> AsyncIterator[list[dict[str, Any]]]:
    """The NDJSON body as chunks of items, each with its ``line``; a line that is not a
    JSON object goes to ``problems`` (and nothing will be created)."""
    number = 0
    pending = b""
    batch: list[dict[str, Any]] = []
    async for data in request.content.iter_any():
        pending += data
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_BODY:
            raise ApiError(413, "too_large", f"line {number + len(lines) + 1} of the body is over {MAX_BODY} bytes")
        for raw in lines:
            number += 1
            _bulk_line(number, raw, batch, problems)
        if batch:
            yield batch
            batch = []
    if pending:
        _bulk_line(number + 1, pending, batch, problems)
    if batch:
        yield batch


def _bulk_line(number: int, raw: bytes, batch: list[dict[str, Any]], problems: list[str]) -> None:
    if not raw.strip():
        return
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", f"line {number} of the body is over {MAX_BODY} bytes")
    try:
        item = parse_json(raw)
        if not isinstance(item, dict):
            raise InvalidInput("expected a JSON object")
    except InvalidInput as exc:
        problems.append(f"line {number}: {exc.message.removeprefix('the request body is ')}")
        return
    item["line"] = number
    batch.append(item)


def _line_number(problem: str) -> int:
    number = problem.removeprefix("line ").split(":", 1)[0]
    return int(number) if number.isdigit() else 0


def build_app(service: Service, streams: Streams, token: Callable[[], str | None],
              idempotency: IdempotencyCache | None = None) -> web.Application:
    """The application, with every route under ``/`` and ``/api/v1``."""
    api = Api(service, streams, token, idempotency)
    app = web.Application(middlewares=[api.errors, api.auth], client_max_size=MAX_BODY)
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("POST", "/bots/bulk", api.bulk),
        ("POST", "/bots", api.create),
        ("GET", "/bots", api.list),
        ("GET", "/bots/{id}", api.show),
        ("PATCH", "/bots/{id}", api.reschedule),
        ("DELETE", "/bots/{id}", api.cancel),
        ("POST", "/bots/{id}/leave", api.leave),
        ("GET", "/bots/{id}/wait", api.wait),
        ("GET", "/events", api.events),
        ("GET", "/openapi.json", api.openapi),
    ]
    for prefix in PREFIXES:
        for method, path, handler in routes:
            app.router.add_route(method, prefix + path, handler)
    app[API_KEY] = api
    return app


API_KEY = web.AppKey("api", Api)
