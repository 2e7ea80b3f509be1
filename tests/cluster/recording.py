"""What the multi-agent tests share: an agent daemon whose command runners record every line
they read (``agent_recorder.sh``), the database's view of who holds what, and the records."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.support.home import Home, Homes

RECORDER = Path(__file__).with_name("agent_recorder.sh")
#: The states in which an agent holds a bot (runs a runner for it).
HELD = ("staged", "joining", "waiting_room", "joined_not_recording", "joined_recording", "leaving", "post_processing")


def recording_agent(make_home: Homes, url: str, name: str, rec_dir: Path, slots: int, hold_s: float | str,
                    lease_s: float, stage_lead_s: float) -> Home:
    """A started agent named ``name`` on ``url``; its runners tag their records with ``name``."""
    home = make_home(
        {
            "store": {"url": url},
            "cluster": {"agent_name": name, "lease_seconds": lease_s},
            "scheduler": {"stage_lead_seconds": stage_lead_s},
            "runner": {"kind": "command", "command": ["/bin/sh", str(RECORDER)], "max_concurrent": slots,
                       "env": {"REC_DIR": str(rec_dir), "AGENT_TAG": name, "HOLD_S": str(hold_s)}},
        }
    )
    home.start()
    return home


def meeting(i: int) -> str:
    """A distinct valid Google Meet URL per ``i`` (< 676)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return f"https://meet.google.com/abc-d{letters[i // 26]}{letters[i % 26]}e-fgh"


def rows(url: str) -> list[tuple[str, str, str | None]]:
    """(id, state, agent) of every bot, straight from the database."""
    with psycopg.connect(url) as connection:
        return [(str(a), str(b), c) for a, b, c in connection.execute("SELECT id, state, agent FROM bots").fetchall()]


def records(rec_dir: Path, bot_id: str) -> list[list[str]]:
    """The bot's runner records, split: ``start PID AGENT``, ``line PID AGENT TEXT...``, ``eof PID AGENT``."""
    path = rec_dir / f"{bot_id}.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def joins(rec_dir: Path, bot_id: str) -> list[str]:
    """The agents whose runners read ``join`` for this bot, one entry per ``join`` read."""
    return [line[2] for line in records(rec_dir, bot_id) if line[0] == "line" and line[3:] == ["join"]]
