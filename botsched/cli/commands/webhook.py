"""``botsched webhook add|list|remove|test|deliveries|replay`` (SPEC section 8).

Thin: the daemon checks and stores (``botsched.daemon.webhooks.service``); this asks and
shows. The secret is printed once, by ``add``; ``list`` gets it masked from the daemon.
Human output is plain aligned text (ids and URLs whole, so it greps); ``--json`` is exact.
"""

from __future__ import annotations

from typing import Any

from botsched.cli.output import changed, emit_json, say, warn
from botsched.core.protocol import Op


def _call(op: Op, **args: Any) -> tuple[Any, list[str]]:
    from botsched.client.connection import connect

    with connect() as conn:
        return conn.call(op, **args)


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def add(url: str, wanted: list[str], as_json: bool) -> None:
    endpoint, warnings = _call(Op.WEBHOOK_ADD, url=url, states=wanted)
    changed(f"added webhook {endpoint['id']}")
    warn(warnings)
    if as_json:
        emit_json(endpoint)
        return
    say(f"id:     {endpoint['id']}")
    say(f"secret: {endpoint['secret']}")
    say(f"url:    {endpoint['url']}")
    say(f"states: {', '.join(endpoint['states']) or 'every change'}")
    say("The secret is shown only now: keep it to verify the webhook-signature header.")


def list_endpoints(as_json: bool) -> None:
    endpoints, warnings = _call(Op.WEBHOOK_LIST)
    warn(warnings)
    if as_json:
        emit_json(endpoints)
        return
    if not endpoints:
        say("no webhook endpoints (add one: botsched webhook add https://...)")
        return
    rows = []
    for item in endpoints:
        counts = item["deliveries"]
        state = item["state"] if item["state"] == "active" else f"disabled ({item['disabled_reason']})"
        rows.append([item["id"], state, item["url"], ",".join(item["states"]) or "all", item["secret"],
                     f"{counts['pending']}/{counts['delivered']}/{counts['failed']}"])
    _table(rows, ["ID", "STATE", "URL", "STATES", "SECRET", "PENDING/DELIVERED/FAILED"])


def remove(endpoint: str) -> None:
    _, warnings = _call(Op.WEBHOOK_REMOVE, endpoint=endpoint)
    changed(f"removed webhook {endpoint}")
    warn(warnings)
    say(f"removed {endpoint}")


def _answer(item: dict[str, Any]) -> str:
    if item["last_error"]:
        return str(item["last_error"])
    if item["last_status"] is not None:
        return f"HTTP {item['last_status']}"
    return "-"


def test(endpoint: str, as_json: bool) -> None:
    delivery, warnings = _call(Op.WEBHOOK_TEST, endpoint=endpoint)
    changed(f"queued test delivery {delivery['id']}")
    warn(warnings)
    if as_json:
        emit_json(delivery)
        return
    say(f"{delivery['id']}: {delivery['state']} ({_answer(delivery)})")


def deliveries(bot: str | None, failed: bool, limit: int, as_json: bool) -> None:
    args: dict[str, Any] = {"failed": failed, "limit": limit}
    if bot is not None:
        args["bot"] = bot
    found, warnings = _call(Op.WEBHOOK_DELIVERIES, **args)
    warn(warnings)
    if as_json:
        emit_json(found)
        return
    if not found:
        say("no deliveries")
        return
    rows = [[item["id"], item["endpoint_id"], item["new_state"] or item["type"], item["bot_id"] or "-",
             item["state"], str(item["attempts"]), _answer(item), item["next_attempt_at"] or "-"] for item in found]
    _table(rows, ["ID", "ENDPOINT", "EVENT", "BOT", "STATE", "ATTEMPTS", "LAST ANSWER", "NEXT ATTEMPT"])


def replay(delivery: str, as_json: bool) -> None:
    queued, warnings = _call(Op.WEBHOOK_REPLAY, delivery=delivery)
    changed(f"queued delivery {queued['id']}")
    warn(warnings)
    if as_json:
        emit_json(queued)
        return
    say(f"queued {queued['id']}" + (f" (again: {delivery})" if queued["id"] != delivery else " (now)"))
