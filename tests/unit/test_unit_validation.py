"""Unit tests of botsched.core.validation: the input rules of SPEC §5."""

from __future__ import annotations

import pytest

from botsched.core.errors import InvalidInput, NotFound
from botsched.core.validation import (
    parse_metadata_pairs,
    validate_bot_id,
    validate_bot_name,
    validate_dedup_key,
    validate_meeting_url,
    validate_metadata,
)

# -- meeting URL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://meet.google.com/gvy-zzra-ktd",
        "http://example.com",
        "https://zoom.us/j/123?pwd=abc#frag",
        "HTTPS://EXAMPLE.COM/x",
        "https://example.com:8443/room",
        "https://user:pw@example.com/room",
        "http://[::1]:8080/",
        "http://127.0.0.1/",
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0",
    ],
)
def test_good_urls_are_returned_unchanged(url: str) -> None:
    assert validate_meeting_url(url) == url


def test_url_length_limit_is_2048_characters() -> None:
    base = "https://example.com/"
    exactly = base + "a" * (2048 - len(base))
    assert len(exactly) == 2048
    assert validate_meeting_url(exactly) == exactly
    with pytest.raises(InvalidInput, match="too long"):
        validate_meeting_url(exactly + "a")


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        42,
        "example.com",
        "meet.google.com/abc",
        "ftp://example.com/x",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "mailto:a@example.com",
        "https://",
        "https:///path",
        "https:example.com",
        "https://user@/x",
        "http://[::1",  # unbalanced bracket
        "https://example.com:99999/",  # bad port
        "https://example.com:abc/",
        "https://example.com:80:90/",
        "https://example.com:+80/",
        "https://example.com:-1/",
        "https://example.com:\u00b2/",  # superscript two: str.isdigit() is True, int() fails
        "https://example.com:8\u00b9/",
        "https://example.com:\u0663/",  # ARABIC-INDIC DIGIT THREE: a port is ASCII digits
        "https://example.com:\uff18\uff10/",  # fullwidth 80
    ],
)
def test_bad_urls_are_refused(url: object) -> None:
    with pytest.raises(InvalidInput):
        validate_meeting_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://exa mple.com/",
        "https://example.com/ a",
        " https://example.com/",
        "https://example.com/\t",
        "https://example.com/\n",
        "https://example.com/\r\nX-Injected: 1",
        "https://example.com/\x00",
        "https://example.com/\x1b[31m",
        "https://example.com/\x7f",
        "https://example.com/\u00a0",  # no-break space
        "https://example.com/\u2028",  # line separator
    ],
)
def test_whitespace_and_control_characters_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="whitespace or control"):
        validate_meeting_url(url)


@pytest.mark.parametrize("char", ["\x80", "\x9b", "\x9f"])
def test_c1_control_characters_are_refused(char: str) -> None:
    # U+0080..U+009F are control characters (Unicode category Cc) just like U+0000..U+001F;
    # U+009B is CSI, which a terminal showing `botsched list` interprets as an escape.
    with pytest.raises(InvalidInput):
        validate_meeting_url(f"https://example.com/{char}2J")


# -- bot name ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "My scheduled bot", "x" * 100, "Bot 🤖", "Réunion – notes", " "])
def test_good_bot_names(name: str) -> None:
    assert validate_bot_name(name) == name


@pytest.mark.parametrize("name", [None, "", 7, "x" * 101, "tab\there", "new\nline", "bell\x07", "esc\x1b[0m", "\x9b"])
def test_bad_bot_names(name: object) -> None:
    with pytest.raises(InvalidInput):
        validate_bot_name(name)


# -- metadata ---------------------------------------------------------------------------


def test_metadata_none_is_empty() -> None:
    assert validate_metadata(None) == {}


def test_metadata_good() -> None:
    data = {"team": "sales", "empty": "", "ünï": "cödé"}
    assert validate_metadata(data) == data


def test_metadata_pair_limit_is_50() -> None:
    fifty = {f"k{i}": "v" for i in range(50)}
    assert validate_metadata(fifty) == fifty
    with pytest.raises(InvalidInput, match="51 pairs"):
        validate_metadata({**fifty, "k50": "v"})


def test_metadata_size_limit_is_16_kib() -> None:
    assert validate_metadata({"k": "v" * 15_000})
    with pytest.raises(InvalidInput, match="16 KiB"):
        validate_metadata({"k": "v" * 16_384})
    # the limit is in bytes: 6,000 three-byte characters are ~18 KB
    with pytest.raises(InvalidInput, match="16 KiB"):
        validate_metadata({"k": "€" * 6_000})
    # spread over many pairs it counts "in all"
    with pytest.raises(InvalidInput):
        validate_metadata({f"k{i}": "v" * 400 for i in range(45)})


@pytest.mark.parametrize(
    "metadata",
    [
        ["a", "b"],
        "team=sales",
        {"n": 1},
        {"b": True},
        {"x": None},
        {"nested": {"a": "b"}},
        {"list": ["a"]},
        {1: "one"},
        {"": "empty key"},
    ],
)
def test_metadata_must_be_string_to_string(metadata: object) -> None:
    with pytest.raises(InvalidInput):
        validate_metadata(metadata)


def test_parse_metadata_pairs() -> None:
    assert parse_metadata_pairs([]) == {}
    assert parse_metadata_pairs(["team=sales", "url=https://x/?a=b", "empty="]) == {
        "team": "sales",
        "url": "https://x/?a=b",  # only the first '=' splits
        "empty": "",
    }
    assert parse_metadata_pairs(["k=1", "k=2"]) == {"k": "2"}  # later wins


@pytest.mark.parametrize("pair", ["team", "=sales", ""])
def test_parse_metadata_pairs_refuses_missing_key_or_equals(pair: str) -> None:
    with pytest.raises(InvalidInput, match="KEY=VALUE"):
        parse_metadata_pairs(["ok=1", pair])


def test_parse_metadata_pairs_applies_the_limits() -> None:
    with pytest.raises(InvalidInput):
        parse_metadata_pairs([f"k{i}=v" for i in range(51)])


# -- dedup key --------------------------------------------------------------------------


def test_dedup_key() -> None:
    assert validate_dedup_key(None) is None
    assert validate_dedup_key("cal:abc@google.com") == "cal:abc@google.com"
    assert validate_dedup_key("k" * 256) == "k" * 256
    for bad in ["", "k" * 257, "a\nb", 5, ["k"]]:
        with pytest.raises(InvalidInput):
            validate_dedup_key(bad)


# -- bot ids ----------------------------------------------------------------------------


def test_good_bot_id() -> None:
    assert validate_bot_id("bot_HiXYgjyeWmTVOaII") == "bot_HiXYgjyeWmTVOaII"
    assert validate_bot_id("bot_0123456789abcdef") == "bot_0123456789abcdef"


@pytest.mark.parametrize(
    "bot_id",
    [
        None,
        "",
        123,
        "bot_",
        "bot_HiXYgjyeWmTVOaI",  # 15
        "bot_HiXYgjyeWmTVOaIIx",  # 17
        "BOT_HiXYgjyeWmTVOaII",
        "bot-HiXYgjyeWmTVOaII",
        "bot_HiXYgjyeWmTVOa_I",
        "bot_HiXYgjyeWmTVOaI!",
        "bot_HiXYgjyeWmTVOaII\n",
        " bot_HiXYgjyeWmTVOaII",
        "bot_HiXYgjyeWmTVOaÏI",
        "'; DROP TABLE bots; --",
    ],
)
def test_malformed_bot_ids_are_not_found_exit_3(bot_id: object) -> None:
    with pytest.raises(NotFound) as info:
        validate_bot_id(bot_id)
    assert info.value.exit_code == 3
    assert "no such bot" in info.value.message


# -- undecodable input ------------------------------------------------------------------
# A byte that is not UTF-8 in argv reaches Python as a lone surrogate (surrogateescape),
# e.g. `botsched create URL --metadata $'k=\xff'`. It cannot be stored or sent as UTF-8,
# so the rules must refuse it as bad input (exit 2) instead of letting a
# UnicodeEncodeError surface later as an internal error (exit 1).


@pytest.mark.parametrize("char", ["\udcff", "\ud800"])
def test_lone_surrogates_are_refused_in_metadata(char: str) -> None:
    with pytest.raises(InvalidInput):
        validate_metadata({"k": f"v{char}"})
    with pytest.raises(InvalidInput):
        validate_metadata({f"k{char}": "v"})
    with pytest.raises(InvalidInput):
        parse_metadata_pairs([f"k=v{char}"])


@pytest.mark.parametrize("char", ["\udcff", "\ud800"])
def test_lone_surrogates_are_refused_in_urls(char: str) -> None:
    with pytest.raises(InvalidInput):
        validate_meeting_url(f"https://example.com/{char}")


@pytest.mark.parametrize("char", ["\udcff", "\ud800"])
def test_lone_surrogates_are_refused_in_names_and_keys(char: str) -> None:
    with pytest.raises(InvalidInput):
        validate_bot_name(f"name{char}")
    with pytest.raises(InvalidInput):
        validate_dedup_key(f"key{char}")
