"""``botsched create --from FILE|-``: ids one per line, a JSON array, all or nothing (SPEC §5)."""

from __future__ import annotations

import json

from tests.support.home import BOT_KEYS, ID_RE, assert_clean_error


def good(tag: str) -> list[dict]:
    """Three valid lines; the dedup key is unique per test (the tests share a daemon)."""
    items = [dict(item) for item in _GOOD]
    items[2]["deduplication_key"] = f"bulk-3-{tag}"
    return items


_GOOD = [
    {"meeting_url": "https://zoom.us/j/1", "bot_name": "First", "join_at": "2028-01-01T10:00:00Z"},
    {"meeting_url": "https://meet.google.com/abc-defg-hij", "bot_name": "Second", "join_at": "2028-01-02T10:00:00.250Z",
     "metadata": {"team": "sales", "n": "2"}},
    {"meeting_url": "https://teams.microsoft.com/l/x", "bot_name": "Third", "join_at": "2028-01-03T12:00:00+02:00",
     "deduplication_key": "bulk-3"},
]


def jsonl(items) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


def test_from_file_prints_one_id_per_line(module_home):
    home = module_home
    items = good("file")
    source = home.path / "bots.jsonl"
    source.write_text(jsonl(items))
    result = home.ok("create", "--from", str(source))
    ids = result.stdout.splitlines()
    assert len(ids) == 3 and all(ID_RE.match(i) for i in ids), result.stdout
    bots = [home.show(i) for i in ids]
    assert [b["bot_name"] for b in bots] == ["First", "Second", "Third"], "ids in the file's order"
    assert bots[0]["join_at"] == "2028-01-01T10:00:00Z"
    assert bots[1]["join_at"] == "2028-01-02T10:00:00.250Z"
    assert bots[1]["metadata"] == {"team": "sales", "n": "2"}
    assert bots[2]["join_at"] == "2028-01-03T10:00:00Z"
    assert bots[2]["deduplication_key"] == "bulk-3-file"
    assert all(b["state"] == "scheduled" for b in bots)


def test_from_stdin_and_json_array(module_home):
    home = module_home
    items = good("stdin")
    result = home.ok("create", "--from", "-", "--json", input=jsonl(items))
    bots = json.loads(result.stdout)
    assert isinstance(bots, list) and len(bots) == 3
    for bot, item in zip(bots, items):
        assert set(bot) == BOT_KEYS
        assert ID_RE.match(bot["id"])
        assert bot["meeting_url"] == item["meeting_url"]
        assert bot["bot_name"] == item["bot_name"]
        assert home.show(bot["id"]) == bot
    quiet = home.ok("create", "--from", "-", "-q", input=jsonl([items[0]])).stdout
    assert ID_RE.match(quiet.strip()) and quiet.count("\n") == 1


def test_bad_lines_create_nothing_and_are_all_named(module_home):
    home = module_home
    baseline = home.list_all()
    items = good("mixed")
    lines = [
        json.dumps(items[0]),                                                     # 1 fine
        '{"meeting_url": "https://zoom.us/j/2", "join_at": ',                  # 2 bad JSON
        json.dumps(items[1]),                                                     # 3 fine
        json.dumps({"meeting_url": "ftp://zoom.us/j/4"}),                        # 4 bad URL
        json.dumps({"meeting_url": "https://zoom.us/j/5", "join_at": "2020-01-01T00:00:00Z"}),  # 5 past
        json.dumps({"meeting_url": "https://zoom.us/j/6", "join_at": "2028-01-01T00:00:00Z"}),  # 6 fine
        json.dumps({"meeting_url": "https://zoom.us/j/7", "bot_name": "x" * 101}),  # 7 long name
    ]
    source = home.path / "mixed.jsonl"
    source.write_text("\n".join(lines) + "\n")
    for args, stdin in ((["--from", str(source)], None), (["--from", "-"], "\n".join(lines) + "\n")):
        result = home.run("create", *args, input=stdin)
        stderr = assert_clean_error(result, 2, lines=None)
        for bad in (2, 4, 5, 7):
            assert f"line {bad}" in stderr, f"line {bad} is not named:\n{stderr}"
        for fine in (1, 3, 6):
            assert f"line {fine}:" not in stderr, f"fine line {fine} named as bad:\n{stderr}"
        assert result.stdout == ""
        assert home.list_all() == baseline, "a refused bulk create created something"


def test_only_a_past_time_is_still_all_or_nothing(module_home):
    home = module_home
    """The past-time check is the daemon's: it too must refuse the whole file."""
    before = home.list_all()
    items = good("past")
    past = {"meeting_url": "https://zoom.us/j/9", "join_at": "2001-01-01T00:00:00Z"}
    lines = [json.dumps(items[0]), json.dumps(past)]
    result = home.run("create", "--from", "-", input="\n".join(lines) + "\n")
    stderr = assert_clean_error(result, 2, lines=None)
    assert "line 2" in stderr and "past" in stderr
    assert home.list_all() == before


def test_duplicate_dedup_keys_create_nothing(module_home):
    home = module_home
    before = home.list_all()
    items = good("dup")
    lines = [json.dumps({**item, "deduplication_key": "same"}) for item in items[:2]]
    result = home.run("create", "--from", "-", input="\n".join(lines) + "\n")
    assert result.returncode != 0
    assert_clean_error(result, None, lines=None)
    assert home.list_all() == before


def test_missing_file(module_home):
    home = module_home
    result = home.run("create", "--from", str(home.path / "nope.jsonl"))
    assert_clean_error(result, 2)
