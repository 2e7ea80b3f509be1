"""Unit tests of botsched.core.protocol (newline-delimited JSON) and the error codes it carries."""

from __future__ import annotations

import json

import pytest

from botsched.core import errors, protocol
from botsched.core.errors import BotschedError, Conflict, DaemonUnavailable, InvalidInput, NotFound, WaitTimeout
from botsched.core.protocol import ProtocolError, decode, encode, parse_request


def test_encode_is_one_compact_utf8_line() -> None:
    message = {"v": 1, "text": "line one\nline two", "name": "Réunion 🤖", "n": [1, 2]}
    line = encode(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # embedded newlines are escaped
    assert "Réunion 🤖".encode() in line  # UTF-8, not \u escapes
    assert b", " not in line and b": " not in line
    assert decode(line) == message
    assert decode(line.rstrip(b"\n")) == message


def test_request_round_trip() -> None:
    line = protocol.request("show", id="bot_HiXYgjyeWmTVOaII")
    assert parse_request(decode(line)) == ("show", {"id": "bot_HiXYgjyeWmTVOaII"})


def test_reply_shapes() -> None:
    assert decode(protocol.reply({"x": 1})) == {"v": 1, "ok": True, "result": {"x": 1}, "warnings": []}
    assert decode(protocol.reply(None, ["careful"]))["warnings"] == ["careful"]
    error = decode(protocol.error_reply(NotFound("no such bot: bot_x")))
    assert error == {"v": 1, "ok": False, "error": {"code": "not_found", "message": "no such bot: bot_x"}}
    assert decode(protocol.event_line({"state": "ended"})) == {"v": 1, "event": {"state": "ended"}}


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"{",
        b"}",
        b"not json",
        b"{'single': 'quotes'}",
        b'{"a": 1,}',
        b'{"a": NaN',
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"null",
        b"true",
        b"\xff\xfe\xfd",
        b'{"a": "\xff"}',
        b'{"a": "\xc3"}',  # truncated UTF-8 sequence
        b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8
        b'{"a": 1' + b"0" * 5000 + b"}",  # beyond int digit limits
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
)
def test_malformed_lines_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(line)
    assert isinstance(info.value, InvalidInput)
    assert info.value.exit_code == 2
    assert len(info.value.message) < 400  # one short line, not an echo of the input


@pytest.mark.parametrize(
    "line",
    [
        '{"v": 1}'.encode("utf-16"),  # with a BOM
        '{"v": 1}'.encode("utf-16-le"),
        '{"v": 1}'.encode("utf-32"),
    ],
)
def test_non_utf8_encodings_are_protocol_errors(line: bytes) -> None:
    # the protocol is UTF-8 JSON lines; json.loads(bytes) would quietly sniff UTF-16/32
    with pytest.raises(ProtocolError):
        decode(line)


def test_moderately_nested_json_is_fine() -> None:
    value = decode(b'{"a":' + b"[" * 50 + b"]" * 50 + b"}")["a"]
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    assert value == [] and depth == 49


@pytest.mark.parametrize(
    "line",
    [
        b'{"v": 1, "op": "create", "args": {"bot_name": "\\ud800"}}',  # an escaped lone surrogate
        b'{"v": 1, "op": "create", "args": {"\\udfff": "x"}}',
        b'{"v": 1, "op": "create", "args": {"bot_name": "ok \\ud83d\\ude00"}}',  # a valid pair: fine
    ],
)
def test_whatever_decode_accepts_can_be_encoded_back(line: bytes) -> None:
    # The daemon echoes request values in replies and error messages ("unknown field(s): ...")
    # and stores them in SQLite; a lone surrogate cannot be encoded as UTF-8, so letting one
    # through turns bad input into a UnicodeEncodeError (an internal error) later on.
    try:
        message = decode(line)
    except ProtocolError:
        return
    encode(message)
    protocol.error_reply(InvalidInput(f"unknown field(s): {', '.join(message['args'])}"))


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"op": "show", "args": {}},
        {"v": 2, "op": "show", "args": {}},
        {"v": 0, "op": "show", "args": {}},
        {"v": "1", "op": "show", "args": {}},
        {"v": None, "op": "show", "args": {}},
    ],
)
def test_version_is_checked(message: dict) -> None:
    with pytest.raises(ProtocolError, match="version"):
        parse_request(message)


@pytest.mark.parametrize(
    "message",
    [
        {"v": 1},
        {"v": 1, "op": 5, "args": {}},
        {"v": 1, "op": None},
        {"v": 1, "op": "show", "args": []},
        {"v": 1, "op": "show", "args": None},
        {"v": 1, "op": "show", "args": "id=bot_x"},
    ],
)
def test_op_and_args_are_checked(message: dict) -> None:
    with pytest.raises(ProtocolError):
        parse_request(message)


def test_args_default_to_empty() -> None:
    assert parse_request({"v": 1, "op": "status"}) == ("status", {})


def test_max_line_is_a_sane_bound() -> None:
    assert 64 * 1024 <= protocol.MAX_LINE <= 16 * 1024 * 1024


@pytest.mark.parametrize(
    "cls, exit_code",
    [(BotschedError, 1), (InvalidInput, 2), (NotFound, 3), (Conflict, 4), (DaemonUnavailable, 5), (WaitTimeout, 124)],
)
def test_error_codes_round_trip_over_the_wire(cls: type[BotschedError], exit_code: int) -> None:
    original = cls("something went wrong")
    wire = json.loads(protocol.error_reply(original))["error"]
    rebuilt = errors.from_code(wire["code"], wire["message"])
    assert type(rebuilt) is cls
    assert rebuilt.exit_code == exit_code
    assert rebuilt.message == "something went wrong"
    assert str(rebuilt) == "something went wrong"


def test_unknown_error_code_is_internal() -> None:
    rebuilt = errors.from_code("martian", "??")
    assert type(rebuilt) is BotschedError
    assert rebuilt.exit_code == 1


def test_protocol_error_travels_as_invalid() -> None:
    wire = json.loads(protocol.error_reply(ProtocolError("bad line")))["error"]
    assert wire["code"] == "invalid"
    assert errors.from_code(wire["code"], wire["message"]).exit_code == 2
