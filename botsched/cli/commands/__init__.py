"""The bodies of the commands, one module per group, free of Typer: ``botsched.cli.app``
declares them for Typer and ``botsched.cli.main`` runs the fast ones directly."""
