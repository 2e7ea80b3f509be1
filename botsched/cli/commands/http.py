"""``botsched http token [--rotate]``: the bearer token that TCP requests to the HTTP API
need (SPEC §9). It lives in a 0600 file beside the database; a running daemon picks up a
rotated one at its next request, without a restart. Printed on stdout only, never logged.
"""

from __future__ import annotations

from botsched.cli.output import say


def token(rotate: bool) -> None:
    from botsched.core.http_token import token_command
    from botsched.core.paths import resolve_paths

    say(token_command(resolve_paths(), rotate))
