"""``python -m botsched`` is the same as the ``botsched`` command."""

from botsched.cli.main import main

if __name__ == "__main__":
    main()
