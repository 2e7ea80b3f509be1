"""Planning: compare what a calendar asks for with its bots, and say what to change.

Pure: bots in (as the daemon lists them), ``Action``s out; the CLI applies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from botsched.calsync.keys import key_base, key_prefix
from botsched.calsync.model import (
    ACTIONS,
    LEFT_ALONE,
    TERMINAL,
    Action,
    Skipped,
    Wanted,
    instant_text,
)
from botsched.core.errors import InvalidInput
from botsched.core.timeparse import parse_instant


def _bot_join_us(bot: dict[str, Any]) -> int | None:
    text = bot.get("join_at")
    if not text:
        return None
    try:
        return parse_instant(text)
    except InvalidInput:
        return None


def plan(
    desired: Sequence[Wanted],
    existing_bots: Iterable[dict[str, Any]],
    now_us: int,
    *,
    skipped: Sequence[Skipped] = (),
    horizon_us: int | None = None,
    calendar: str | None = None,
) -> list[Action]:
    """What to do so that every wanted occurrence has exactly one bot.

    Only bots whose dedup key starts with ``ical:`` (or with ``ical/<NAME>:`` for the
    followed ``calendar``) are looked at. A ``scheduled`` bot
    is rescheduled when its time differs, replaced (cancel + create) when the meeting
    link changed, and cancelled when its occurrence is gone (removed, cancelled,
    declined, lost its link) — unless it joins at or after ``horizon_us`` (beyond the
    window this run looked at). Bots in any other state are never touched: they are
    reported. A key whose bot already ran (``ended``/``fatal_error``) is done.
    """
    prefix = key_prefix(calendar)
    live: dict[str, dict[str, Any]] = {}
    finished: dict[str, dict[str, Any]] = {}
    for bot in existing_bots:
        key = bot.get("deduplication_key") or ""
        if not key.startswith(prefix):
            continue
        if bot.get("state") in TERMINAL:
            finished.setdefault(key, bot)
        else:
            live[key] = bot
    actions: list[Action] = []
    handled: set[str] = set()
    for want in desired:
        if want.key in handled:
            continue
        handled.add(want.key)
        actions.extend(_plan_wanted(want, live.get(want.key), finished.get(want.key)))
    unreadable = {skip.key for skip in skipped if skip.unreadable}
    for skip in skipped:
        if skip.key in handled:
            continue
        handled.add(skip.key)
        held = live.get(skip.key)
        if held is None:
            start = None if skip.start_us is None else instant_text(skip.start_us)
            actions.append(Action("skipped", skip.key, skip.summary, None, skip.reason, start=start,
                                  sort_us=now_us if skip.start_us is None else skip.start_us))
            continue
        actions.append(_plan_gone(held, now_us, horizon_us, skip.reason if skip.cancels_bot else None, skip))
    for key, bot in live.items():
        if key in handled:
            continue
        if key_base(key) in unreadable:  # an occurrence of a series that could not be read this time
            actions.append(_plan_gone(bot, now_us, horizon_us, None, None, why=LEFT_ALONE))
            continue
        actions.append(_plan_gone(bot, now_us, horizon_us, "event removed from the calendar", None))
    actions.sort(key=lambda a: (a.sort_us, a.key, _ORDER.get(a.action, 9)))
    return actions


#: Display order of one key's actions (a replaced bot: cancel, then create).
_ORDER = {"cancel": 0, "create": 1}


def _summary_of(bot: dict[str, Any]) -> str:
    return (bot.get("metadata") or {}).get("calendar_summary") or "(unknown event)"


def _plan_wanted(want: Wanted, bot: dict[str, Any] | None, done: dict[str, Any] | None) -> list[Action]:
    def action(kind: str, reason: str | None = None, **extra: Any) -> Action:
        return Action(kind, want.key, want.summary, want.join_at, reason, meeting_url=want.meeting_url,
                      start=instant_text(want.start_us), metadata=want.metadata, sort_us=want.join_at_us, **extra)

    if bot is None:
        if done is not None:
            return [action("unchanged", f"bot already ran ({done['state']})", bot_id=done["id"], state=done["state"])]
        return [action("create")]
    state = bot.get("state")
    current_us = _bot_join_us(bot)
    ids = {"bot_id": bot["id"], "state": state}
    if state != "scheduled":
        if current_us is not None and current_us != want.join_at_us:
            return [action("skipped", f"event moved, but the bot is {state}: left alone",
                           previous_join_at=bot.get("join_at"), **ids)]
        return [action("unchanged", f"bot is {state}", **ids)]
    if bot.get("meeting_url") != want.meeting_url:
        return [
            Action("cancel", want.key, want.summary, bot.get("join_at"), "meeting link changed: replacing the bot",
                   bot_id=bot["id"], meeting_url=bot.get("meeting_url"), state=state,
                   start=instant_text(want.start_us), sort_us=want.join_at_us),
            action("create", "meeting link changed"),
        ]
    if current_us != want.join_at_us:
        return [action("reschedule", "join time changed", previous_join_at=bot.get("join_at"), **ids)]
    return [action("unchanged", **ids)]


def _plan_gone(
    bot: dict[str, Any], now_us: int, horizon_us: int | None, reason: str | None, skip: Skipped | None,
    why: str | None = None,
) -> Action:
    """A live bot whose key is not wanted now; ``reason`` None means its occurrence is
    under way, or could not be read (``why`` then says so): the bot is left alone."""
    key = bot["deduplication_key"]
    summary = skip.summary if skip is not None else _summary_of(bot)
    join_us = _bot_join_us(bot)
    skip_us = skip.start_us if skip is not None else None
    sort_us = join_us if join_us is not None else (skip_us if skip_us is not None else now_us)

    def action(kind: str, why: str) -> Action:
        return Action(kind, key, summary, bot.get("join_at"), why, bot_id=bot["id"],
                      meeting_url=bot.get("meeting_url"), state=bot.get("state"),
                      start=instant_text(skip_us) if skip_us is not None else None, sort_us=sort_us)

    if skip is not None and skip.unreadable:
        why = f"left alone: {skip.reason}"
    state = bot.get("state")
    if state != "scheduled":
        if reason is None:
            return action("unchanged", why or f"bot is {state}")
        return action("skipped", f"{reason}, but the bot is {state}: left alone")
    if reason is None:
        return action("unchanged", why or (skip.reason if skip is not None else "under way"))
    if join_us is not None and join_us <= now_us:
        return action("unchanged", "bot is about to join: left alone")
    if skip is None and horizon_us is not None and join_us is not None and join_us >= horizon_us:
        return action("unchanged", "beyond the sync window")
    return action("cancel", reason)


def counts(actions: Iterable[Action]) -> dict[str, int]:
    result = {name: 0 for name in (*ACTIONS, "failed")}
    for item in actions:
        result[item.action] = result.get(item.action, 0) + 1
    return result
