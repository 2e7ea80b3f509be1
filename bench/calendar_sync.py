"""How fast is ``botsched calendar sync`` on a big real-world calendar? (issue 16)

Generates a realistic ``.ics`` export of ``--events`` VEVENTs (default 5,000: about the
size of the largest real file tried, 1.6 MB / 4,778 events) around the real now, then
times the installed CLI end to end against a throw-away daemon:

- **dry run**: ``botsched calendar sync FILE --dry-run`` with an empty daemon (read,
  parse, expand, ask the daemon for the calendar's bots, print the plan as a table);
- **first sync**: ``botsched calendar sync FILE`` on that empty daemon: every wanted
  occurrence becomes a bot (the issue's file gave 1,155);
- **re-sync**: the same command again: nothing changes, every bot is ``unchanged``.

Target (issue 16): dry run and first sync ≤ 2 s each on a 2-core machine.

The file mixes what the exporters write: Google (``X-GOOGLE-CONFERENCE``, Meet links in
an HTML ``DESCRIPTION``, ``X-WR-TIMEZONE``), Outlook / Exchange (Windows zone names with
their ``VTIMEZONE``, Teams links in ``DESCRIPTION``, ``X-ALT-DESC`` and
``X-MICROSOFT-SKYPETEAMSMEETINGURL``), Zoom links in ``LOCATION``, Webex, ``URL``
properties that are web pages, events without any link, all-day events, cancelled and
declined ones; recurring series (daily, weekly, biweekly, monthly; ``COUNT``, ``UNTIL``,
``EXDATE``) many of which started years ago, with moved, retitled and cancelled
occurrences (``RECURRENCE-ID``), and years of single events in the past — real exports
are mostly history.

``--write FILE`` only writes the calendar (for profiling: ``python -m cProfile -s cumtime
-m botsched calendar sync FILE --dry-run``). The output is deterministic for a given
``--seed`` and day.
"""

from __future__ import annotations

import json
import random
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchDaemon,
    Metric,
    bench_args,
    log,
    main_guard,
    median_of_runs,
    report,
)

EMAIL = "me@example.com"

VTIMEZONES = {
    "Europe/Berlin": """BEGIN:VTIMEZONE
TZID:Europe/Berlin
X-LIC-LOCATION:Europe/Berlin
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE
""",
    "America/New_York": """BEGIN:VTIMEZONE
TZID:America/New_York
X-LIC-LOCATION:America/New_York
BEGIN:DAYLIGHT
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
TZNAME:EDT
DTSTART:19700308T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
TZNAME:EST
DTSTART:19701101T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
END:STANDARD
END:VTIMEZONE
""",
    "W. Europe Standard Time": """BEGIN:VTIMEZONE
TZID:W. Europe Standard Time
BEGIN:STANDARD
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
""",
    "Pacific Standard Time": """BEGIN:VTIMEZONE
TZID:Pacific Standard Time
BEGIN:STANDARD
DTSTART:16010101T020000
TZOFFSETFROM:-0700
TZOFFSETTO:-0800
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=1SU;BYMONTH=11
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:-0800
TZOFFSETTO:-0700
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=2SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
""",
}

WORDS = [
    "sync", "planning", "review", "retro", "standup", "design", "budget", "roadmap", "hiring", "onboarding",
    "customer", "partner", "security", "incident", "launch", "demo", "interview", "quarterly", "weekly", "product",
    "marketing", "sales", "support", "data", "platform", "mobile", "web", "infra", "billing", "legal", "offsite",
    "workshop", "training", "kickoff",
]


def _fold(line: str) -> str:
    """RFC 5545 folding at 75 octets (what every exporter does)."""
    data = line.encode()
    if len(data) <= 75:
        return line + "\r\n"
    out: list[str] = []
    while len(data) > 75:
        cut = 75 if not out else 74
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # never split a UTF-8 sequence
            cut -= 1
        out.append(data[:cut].decode())
        data = data[cut:]
    out.append(data.decode())
    return "\r\n ".join(out) + "\r\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


class Generator:
    """One calendar of ``events`` VEVENTs; ``today`` anchors the history and the future."""

    def __init__(self, events: int, today: date, seed: int, days: int) -> None:
        self.rng = random.Random(seed)
        self.total = events
        self.today = today
        self.days = days
        self.lines: list[str] = []
        self.count = 0

    # -- pieces ---------------------------------------------------------------------

    def title(self) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 4))).capitalize()

    def uid(self, kind: str) -> str:
        n = self.rng.getrandbits(64)
        if kind == "google":
            return f"{n:016x}{self.count:05d}@google.com"
        if kind == "outlook":
            return f"040000008200E00074C5B7101A82E00800000000{n:016X}{self.count:08X}"
        return f"{n:x}-{self.count}@example.com"

    def when(self, value: datetime, zone: str | None) -> str:
        """A DTSTART-style value and its parameters: zone ``None`` is UTC, ``""`` floating."""
        if zone is None:
            return ":" + value.strftime("%Y%m%dT%H%M%SZ")
        if zone == "":
            return ":" + value.strftime("%Y%m%dT%H%M%S")
        return f";TZID={zone}:" + value.strftime("%Y%m%dT%H%M%S")

    def link_props(self, style: str) -> list[str]:
        """Where the meeting link is, in each exporter's way (or a web page, or nothing)."""
        rng = self.rng
        if style == "meet":
            code = "-".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(k)) for k in (3, 4, 3))
            if rng.random() < 0.75:  # older events, or ones whose description was edited
                return [f"X-GOOGLE-CONFERENCE:https://meet.google.com/{code}"]
            return [
                f"X-GOOGLE-CONFERENCE:https://meet.google.com/{code}",
                "DESCRIPTION:" + _escape(
                    f"<p>Agenda in the <a href=\"https://docs.google.com/document/d/{rng.getrandbits(40):x}/edit\">"
                    "doc</a>.</p>\n\n-::~:~::~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~::~:~::-\n"
                    f"Join with Google Meet: https://meet.google.com/{code}\n\n"
                    "Learn more about Meet at: https://support.google.com/a/users/answer/9282720\n\n"
                    "Please do not edit this section.\n-::~:~::~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~:~::~:~::-"),
                "LOCATION:",
            ]
        if style == "zoom":
            meeting = rng.randint(10**10, 10**11 - 1)
            if rng.random() < 0.6:
                return [f"LOCATION:https://us02web.zoom.us/j/{meeting}?pwd=QWxhZGRpbjpvcGVu{rng.getrandbits(20):x}"]
            return [
                f"LOCATION:https://us02web.zoom.us/j/{meeting}?pwd=QWxhZGRpbjpvcGVu{rng.getrandbits(20):x}",
                "DESCRIPTION:" + _escape(
                    f"Join Zoom Meeting\nhttps://us02web.zoom.us/j/{meeting}?pwd=QWxhZGRpbjpvcGVu\n\n"
                    f"Meeting ID: {meeting}\nFind your local number: https://us02web.zoom.us/u/kdXyZ"),
            ]
        if style == "teams":
            thread = f"{rng.getrandbits(128):032x}"
            join = (f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{thread}%40thread.v2/0?context="
                    "%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-2d7cd011db47%22%7d")
            if rng.random() < 0.75:
                return ["LOCATION;LANGUAGE=en-US:Microsoft Teams Meeting",
                        f"X-MICROSOFT-SKYPETEAMSMEETINGURL:{join}",
                        "DESCRIPTION;LANGUAGE=en-US:" + _escape(f"Microsoft Teams meeting\nJoin: {join}")]
            return [
                "LOCATION;LANGUAGE=en-US:Microsoft Teams Meeting",
                f"X-MICROSOFT-SKYPETEAMSMEETINGURL:{join}",
                "DESCRIPTION;LANGUAGE=en-US:" + _escape(
                    "________________________________________________________________________________\n"
                    f"Microsoft Teams meeting\nJoin on your computer, mobile app or room device\n"
                    f"Click here to join the meeting<{join}>\nMeeting ID: 123 456 789 012\nPasscode: AbC123\n"
                    "Learn More<https://aka.ms/JoinTeamsMeeting> | Meeting options<https://teams.microsoft.com/"
                    "meetingOptions/?organizerId=a1b2&tenantId=72f9>\n"
                    "________________________________________________________________________________"),
                "X-ALT-DESC;FMTTYPE=text/html:" + _escape(
                    f"<html><body><div>Microsoft Teams meeting</div><a href=\"{join}\">Click here to join the "
                    "meeting</a></body></html>"),
            ]
        if style == "webex":
            return [
                "LOCATION:https://fabrikam.webex.com/meet/" + "".join(rng.choice("abcdefgh") for _ in range(8)),
                "DESCRIPTION:" + _escape("Webex meeting\nMeeting number: 2630 123 4567\nJoin by phone +1-415-655-0001"),
            ]
        if style == "webpage":  # a festival programme, a meetup, a blog: URL is the event's page
            return [
                f"URL:https://www.meetup.com/python-berlin/events/{rng.randint(10**8, 10**9)}/",
                "LOCATION:" + _escape("Betahaus, Rudi-Dutschke-Straße 23, 10969 Berlin"),
                "DESCRIPTION:" + _escape("Talks and pizza. Details: https://python-berlin.example/meetups"),
            ]
        room = ["LOCATION:" + _escape(f"Room {rng.randint(1, 40)}, building {rng.choice('ABC')}")]  # none: a room
        if rng.random() < 0.3:
            room.append("DESCRIPTION:" + _escape("Notes: https://wiki.example.com/page/" + str(rng.randint(1, 10**6))))
        return room

    def link_style(self) -> str:
        return self.rng.choices(("meet", "zoom", "teams", "webex", "webpage", "none"),
                                weights=(30, 22, 22, 6, 8, 12))[0]

    def attendees(self) -> list[str]:
        rng = self.rng
        partstat = rng.choices(("ACCEPTED", "NEEDS-ACTION", "TENTATIVE", "DECLINED"), weights=(70, 15, 10, 5))[0]
        if rng.random() < 0.5:  # events of one's own calendar often have no attendees at all
            return []
        lines = [f"ORGANIZER;CN=Alex Doe:mailto:alex{rng.randint(1, 30)}@example.com",
                 f"ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT={partstat};CN=Me;X-NUM-GUESTS=0:"
                 f"mailto:{EMAIL}"]
        for _ in range(rng.choice((0, 0, 0, 0, 1, 2))):
            lines.append(f"ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;CN=Colleague "
                         f"{rng.randint(1, 99)};X-NUM-GUESTS=0:mailto:c{rng.randint(1, 999)}@example.com")
        return lines

    def event(self, props: list[str]) -> None:
        self.count += 1
        self.lines.append("BEGIN:VEVENT\r\n")
        self.lines.extend(_fold(p) for p in props)
        self.lines.append("END:VEVENT\r\n")

    def common(self, uid: str, summary: str, stamp: datetime) -> list[str]:
        return [f"UID:{uid}", f"DTSTAMP:{stamp.strftime('%Y%m%dT%H%M%SZ')}", "STATUS:CONFIRMED",
                f"SUMMARY:{_escape(summary)}"]

    def zone(self) -> str | None:
        return self.rng.choices(("Europe/Berlin", "W. Europe Standard Time", "America/New_York",
                                 "Pacific Standard Time", None, ""), weights=(45, 20, 12, 8, 13, 2))[0]

    # -- the calendar ----------------------------------------------------------------

    def series(self, budget_overrides: int) -> int:
        """One recurring series with its overrides; returns the VEVENTs written."""
        rng = self.rng
        kind = rng.choices(("daily", "weekly", "biweekly", "monthly"), weights=(16, 55, 20, 9))[0]
        active = rng.random() < 0.8  # the rest ended (UNTIL in the past)
        years_back = rng.choice((0.2, 0.5, 1, 2, 3, 5))
        first_day = self.today - timedelta(days=int(365 * years_back))
        first_day += timedelta(days=(rng.randint(0, 4) - first_day.weekday()) % 7)
        hour, minute = rng.randint(8, 17), rng.choice((0, 0, 15, 30, 45))
        zone = self.zone()
        start = datetime(first_day.year, first_day.month, first_day.day, hour, minute)
        length = timedelta(minutes=rng.choice((15, 25, 30, 45, 60)))
        rule = {"daily": "FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR", "weekly": "FREQ=WEEKLY",
                "biweekly": "FREQ=WEEKLY;INTERVAL=2", "monthly": "FREQ=MONTHLY;BYDAY=1TU"}[kind]
        if kind in ("weekly", "biweekly"):
            rule += ";BYDAY=" + ("MO", "TU", "WE", "TH", "FR")[start.weekday() % 5]
        if not active:
            until = self.today - timedelta(days=rng.randint(10, 300))
            rule += f";UNTIL={until.strftime('%Y%m%d')}T235959Z"
        elif rng.random() < 0.1:
            rule += f";COUNT={rng.randint(200, 2000)}"
        uid = self.uid(rng.choice(("google", "outlook", "other")))
        summary = self.title()
        style = self.link_style()
        links = self.link_props(style)
        attendees = self.attendees()
        stamp = datetime.combine(self.today - timedelta(days=rng.randint(1, 60)), datetime.min.time())
        props = [f"DTSTART{self.when(start, zone)}", f"DTEND{self.when(start + length, zone)}",
                 f"RRULE:{rule}", *self.common(uid, summary, stamp), *attendees, *links]
        step = {"daily": 1, "weekly": 7, "biweekly": 14, "monthly": 28}[kind]
        exdates = []
        for _ in range(rng.randint(0, 3)):
            day = self.today - timedelta(days=rng.randint(-20, 200))
            exdates.append(datetime(day.year, day.month, day.day, hour, minute))
        if exdates:
            props.append(f"EXDATE{self.when(exdates[0], zone)}" + "".join(
                "," + d.strftime("%Y%m%dT%H%M%S") + ("Z" if zone is None else "") for d in exdates[1:]))
        self.event(props)
        written = 1
        # Overrides: mostly in the past (moved once, long ago), some in the coming weeks.
        for _ in range(budget_overrides):
            if rng.random() < 0.75:
                offset = -rng.randint(1, int(365 * years_back) // step + 1) * step
            else:
                offset = rng.randint(0, max(self.days // step, 1)) * step
            day = self.today + timedelta(days=offset)
            day += timedelta(days=(start.weekday() - day.weekday()) % 7 if kind != "daily" else 0)
            if day < first_day or day.weekday() >= 5:
                continue
            original = datetime(day.year, day.month, day.day, hour, minute)
            what = rng.choices(("moved", "cancelled", "retitled"), weights=(60, 25, 15))[0]
            moved = original + timedelta(hours=rng.choice((-2, -1, 1, 2, 3))) if what == "moved" else original
            override = [f"RECURRENCE-ID{self.when(original, zone)}", f"DTSTART{self.when(moved, zone)}",
                        f"DTEND{self.when(moved + length, zone)}",
                        *self.common(uid, summary + (" (moved)" if what == "retitled" else ""), stamp),
                        *attendees, *links]
            if what == "cancelled":
                override = [p if p != "STATUS:CONFIRMED" else "STATUS:CANCELLED" for p in override]
            self.event(override)
            written += 1
        return written

    def single(self) -> None:
        rng = self.rng
        future = rng.random() < 0.1
        day = self.today + (timedelta(days=rng.randint(0, self.days + 30)) if future
                            else -timedelta(days=rng.randint(1, 365 * 4)))
        uid = self.uid(rng.choice(("google", "outlook", "other")))
        stamp = datetime.combine(self.today - timedelta(days=rng.randint(1, 60)), datetime.min.time())
        if rng.random() < 0.08:  # holidays, offsites, birthdays
            props = [f"DTSTART;VALUE=DATE:{day.strftime('%Y%m%d')}",
                     f"DTEND;VALUE=DATE:{(day + timedelta(days=1)).strftime('%Y%m%d')}",
                     *self.common(uid, self.title(), stamp), "TRANSP:TRANSPARENT"]
        else:
            zone = self.zone()
            start = datetime(day.year, day.month, day.day, rng.randint(7, 19), rng.choice((0, 15, 30, 45)))
            props = [f"DTSTART{self.when(start, zone)}",
                     f"DTEND{self.when(start + timedelta(minutes=rng.choice((30, 45, 60, 90))), zone)}",
                     *self.common(uid, self.title(), stamp), *self.attendees(), *self.link_props(self.link_style())]
            if rng.random() < 0.04:
                props = [p if p != "STATUS:CONFIRMED" else "STATUS:CANCELLED" for p in props]
        self.event(props)

    def build(self, series: int) -> str:
        head = ["BEGIN:VCALENDAR", "PRODID:-//Google Inc//Google Calendar 70.9054//EN", "VERSION:2.0",
                "CALSCALE:GREGORIAN", "METHOD:PUBLISH", f"X-WR-CALNAME:{EMAIL}", "X-WR-TIMEZONE:Europe/Berlin"]
        for line in head:
            self.lines.append(line + "\r\n")
        for text in VTIMEZONES.values():
            self.lines.append(text.replace("\n", "\r\n"))
        override_budget = int(self.total * 0.2)
        for n in range(series):
            remaining_series = series - n
            overrides = self.rng.randint(0, max(2 * override_budget // remaining_series, 0))
            overrides = min(overrides, override_budget)
            override_budget -= overrides
            self.series(overrides)
        while self.count < self.total:
            self.single()
        self.lines.append("END:VCALENDAR\r\n")
        return "".join(self.lines)


def generate(events: int = 5000, today: date | None = None, seed: int = 16, days: int = 14,
             series: int | None = None) -> str:
    """The calendar's text; ``series`` defaults to about 12 % of the events."""
    today = today or datetime.now(UTC).date()
    return Generator(events, today, seed, days).build(series if series is not None else max(events * 12 // 100, 1))


# -- timing ------------------------------------------------------------------------------


def one_run(path: Path, days: int) -> dict[str, float | None]:
    config = {"defaults.timezone": "Europe/Berlin", "calendar.email": EMAIL}
    with BenchDaemon(config) as daemon:
        common = ["calendar", "sync", str(path), "--days", str(days), "--join-offset", "-1m"]
        started = time.perf_counter()
        daemon.cli(*common, "--dry-run")  # what a person runs: the table
        dry = time.perf_counter() - started
        planned = json.loads(daemon.cli(*common, "--dry-run", "--json").stdout)["counts"]
        started = time.perf_counter()
        daemon.cli(*common)
        first = time.perf_counter() - started
        created = daemon.counts().get("scheduled", 0)
        started = time.perf_counter()
        daemon.cli(*common)
        again = time.perf_counter() - started
        unchanged = json.loads(daemon.cli(*common, "--dry-run", "--json").stdout)["counts"]["unchanged"]
    log(f"  dry run {dry:.2f} s ({planned['create']} to create, {planned['skipped']} skipped), first sync "
        f"{first:.2f} s ({created} bots), re-sync {again:.2f} s ({unchanged} unchanged)")
    if created != planned["create"] or unchanged != created:
        raise RuntimeError(f"the dry run planned {planned['create']} bots, the sync made {created}, "
                           f"the re-sync left {unchanged} unchanged")
    return {"dry": dry, "first": first, "again": again, "bots": float(created), "skipped": float(planned["skipped"])}


METRICS = [
    Metric("dry", "dry run (calendar sync --dry-run)", "s", at_most=2.0, digits=2),
    Metric("first", "first sync (creates every bot)", "s", at_most=2.0, digits=2),
    Metric("again", "re-sync (nothing changed)", "s", digits=2),
    Metric("bots", "bots created by the first sync", "", digits=0),
    Metric("skipped", "occurrences skipped (with a reason)", "", digits=0),
]


def main() -> int:
    parser = bench_args(__doc__.split("\n")[0], runs=3)
    parser.add_argument("--events", type=int, default=5000, help="VEVENTs in the file (default 5,000)")
    parser.add_argument("--days", type=int, default=14, help="the sync window, --days (default 14)")
    parser.add_argument("--seed", type=int, default=16, help="random seed of the generator (default 16)")
    parser.add_argument("--write", metavar="FILE", help="only write the calendar to FILE and exit")
    args = parser.parse_args()
    text = generate(args.events, seed=args.seed, days=args.days)
    if args.write:
        Path(args.write).write_text(text)
        log(f"wrote {args.write}: {text.count('BEGIN:VEVENT'):,} events, {len(text.encode()) / 1e6:.2f} MB")
        return 0
    from _common import scratch_dir

    folder = scratch_dir()
    try:
        path = folder / "calendar.ics"
        path.write_text(text)
        log(f"{text.count('BEGIN:VEVENT'):,} events, {len(text.encode()) / 1e6:.2f} MB; "
            f"{args.runs} run(s), each with a fresh daemon")
        runs = []
        for run in range(1, args.runs + 1):
            log(f"run {run}/{args.runs}")
            runs.append(one_run(path, args.days))
    finally:
        path.unlink(missing_ok=True)
        folder.rmdir()
    values = median_of_runs(runs)
    report("botsched calendar sync", METRICS, values, as_json=args.json, runs=args.runs,
           extra={"events": args.events, "bytes": len(text.encode()), "days": args.days},
           note=f"{args.events:,} events, {len(text.encode()) / 1e6:.2f} MB, --days {args.days}; "
                "wall time of the installed CLI, daemon already running.")
    return 0


if __name__ == "__main__":
    main_guard(main)
