"""The one exit-status enum: SPEC.md §5's table and the errors that carry the codes."""

from __future__ import annotations

import re
from pathlib import Path

from botsched.core import errors
from botsched.core.errors import BotschedError, ExitStatus, from_code

#: ``../shared/SPEC.md`` beside the project's root (or beside a folder above it: a git worktree)
SPEC = next((up / "shared" / "SPEC.md" for up in Path(__file__).resolve().parents[2].parents
             if (up / "shared" / "SPEC.md").exists()), Path("../shared/SPEC.md"))


def _documented_codes() -> set[int]:
    table = SPEC.read_text().split("### Exit codes", 1)[1].split("###", 1)[0]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}


def test_every_documented_exit_code_has_its_member() -> None:
    documented = _documented_codes()
    assert documented >= {0, 1, 2, 3, 4, 5, 124}, documented
    assert documented <= {int(status) for status in ExitStatus}


def test_every_error_exits_with_a_member_and_travels_back_as_itself() -> None:
    classes = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, BotschedError)]
    assert len(classes) >= 6
    for cls in classes:
        assert cls.exit_code in set(ExitStatus), cls
        rebuilt = from_code(cls.code, "why")
        assert (type(rebuilt), rebuilt.exit_code, rebuilt.message) == (cls, cls.exit_code, "why")
