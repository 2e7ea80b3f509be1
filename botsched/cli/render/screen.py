"""The console every screen draws on, and the colour of each state.

Colours appear only on a terminal and never with ``NO_COLOR`` (then no escape code at
all, not even bold). Into a pipe or a file nothing is cut to fit a screen: ids and URLs
come out whole, so ``botsched list | grep`` works.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

from botsched.core import states

STATE_STYLES = {
    states.SCHEDULED: "cyan",
    states.READY: "cyan",
    states.STAGED: "blue",
    states.JOINING: "yellow",
    states.WAITING_ROOM: "yellow",
    states.JOINED_NOT_RECORDING: "green",
    states.JOINED_RECORDING: "bold green",
    states.LEAVING: "magenta",
    states.POST_PROCESSING: "magenta",
    states.ENDED: "dim",
    states.FATAL_ERROR: "bold red",
}
STATE_WIDTH = max(len(state) for state in states.ALL_STATES)

#: Padding rich leaves at the end of a line (possibly inside closing escape codes).
_TRAILING = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$")
UNLIMITED_WIDTH = 4096


def console(stderr: bool = False) -> Console:
    """Colours only on a terminal and never with NO_COLOR (https://no-color.org)."""
    stream = sys.stderr if stderr else sys.stdout
    options: dict[str, Any] = {}
    no_color = os.environ.get("NO_COLOR", "") != ""
    if no_color:
        options["color_system"] = None  # no escape codes at all (rich would keep bold/dim)
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if not terminal and not os.environ.get("COLUMNS"):
        options["width"] = UNLIMITED_WIDTH  # a pipe: never truncate an id to fit 80 columns
    return Console(stderr=stderr, highlight=False, no_color=no_color, soft_wrap=False, **options)


def emit(out: Console, *renderables: RenderableType) -> None:
    """Print without the trailing padding rich adds to table cells."""
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    text = "\n".join(_TRAILING.sub(r"\1", line) for line in captured.get().split("\n"))
    out.file.write(text)
    out.file.flush()


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))
