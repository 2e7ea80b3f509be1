"""Human output (rich): ``screen`` (the console, colours, state styles), ``time`` (the one
display zone, "in 3 minutes"), and the screens: ``bots`` and ``calendar``.

Only the human paths import this package (rich costs ~40 ms to import); ``--json`` and
``-q`` output never touch it. Whatever came from outside (names, URLs, calendar titles,
runner details) can hold terminal escapes: every screen passes its data through
``botsched.cli.output.printable`` first, so they are shown as ``\\x1b`` and never obeyed.
"""
