"""``python -m botsched`` is the same as the ``botsched`` command."""

from botsched.fastcli import main

if __name__ == "__main__":
    main()
