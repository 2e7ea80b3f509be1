"""botsched: schedule meeting bots that join at exactly ``join_at``."""

__version__ = "0.1.0"
