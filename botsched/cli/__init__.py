"""The ``botsched`` command: the fast path, the Typer app, output and rendering."""
