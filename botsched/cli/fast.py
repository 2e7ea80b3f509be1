"""The stdlib option reader of the fast path, and the one declaration of the options that
path serves.

``create``/``show``/``list`` are declared once, as ``Spec`` tables (in
``botsched.cli.commands.bots``): this module reads argv with them, and the Typer
declarations in ``botsched.cli.app`` take their flags, help and defaults from the same
tables. The reader accepts a strict subset of what Typer does: anything unusual
(``--help``, an unknown option, a repeated value, a missing argument) returns ``None``
and Typer, which owns every usage message, takes over.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: The kinds of option: a value, a repeatable value, a flag, a whole number.
VALUE, MANY, FLAG, INT = "value", "many", "flag", "int"


class Opt:
    """One option or argument: where it goes, how it is written, what help says."""

    __slots__ = ("default", "dest", "flags", "help", "kind", "metavar")

    def __init__(self, dest: str, *flags: str, kind: str = VALUE, help: str = "", default: Any = None,
                 metavar: str | None = None) -> None:
        self.dest, self.flags, self.kind, self.help, self.default, self.metavar = (
            dest, flags, kind, help, default, metavar)

    def empty(self) -> Any:
        """What the option holds when it is not given."""
        return [] if self.kind == MANY else False if self.kind == FLAG else self.default


class Spec:
    """A command's arguments (positional, in order) and options, and the body both the fast
    path and Typer run with them."""

    def __init__(self, run: Callable[..., Any], arguments: list[Opt], options: list[Opt],
                 required: tuple[str, ...] = ()) -> None:
        self.run, self.arguments, self.options, self.required = run, arguments, options, required
        self.by_flag = {flag: opt for opt in options for flag in opt.flags}

    def opt(self, dest: str) -> Opt:
        return next(opt for opt in [*self.arguments, *self.options] if opt.dest == dest)

    def parse(self, args: list[str]) -> dict[str, Any] | None:
        """``args`` as keyword arguments of ``run``, or ``None`` when Typer should read them."""
        parsed: dict[str, Any] = {opt.dest: opt.empty() for opt in [*self.arguments, *self.options]}
        given: set[str] = set()
        free = [opt.dest for opt in self.arguments]
        position = 0
        while position < len(args):
            arg = args[position]
            name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            opt = self.by_flag.get(name)
            if opt is not None and opt.kind == FLAG:
                if eq:
                    return None
                parsed[opt.dest] = True
            elif opt is not None:
                if not eq:
                    position += 1
                    if position >= len(args):
                        return None
                    value = args[position]
                if opt.kind == MANY:
                    parsed[opt.dest].append(value)
                elif opt.dest in given:
                    return None
                elif opt.kind == INT:
                    if not value.isdigit():
                        return None
                    parsed[opt.dest] = int(value)
                else:
                    parsed[opt.dest] = value
                given.add(opt.dest)
            elif not arg.startswith("-") and free:
                parsed[free.pop(0)] = arg
            else:
                return None  # --help, --from, unknown options, extra arguments: Typer's job
            position += 1
        if any(parsed[dest] is None for dest in self.required):
            return None  # a missing argument: Typer says so
        return parsed


def parse_fast(table: dict[str, Spec], args: list[str]) -> tuple[Spec, dict[str, Any]] | None:
    """The command and its arguments when the fast path can serve them: machine output
    (``--json`` or ``-q``) and nothing unusual; else ``None``."""
    spec = table.get(args[0]) if args else None
    parsed = spec.parse(args[1:]) if spec is not None else None
    if spec is None or parsed is None or not (parsed.get("as_json") or parsed.get("quiet")):
        return None
    return spec, parsed
