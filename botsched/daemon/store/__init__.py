"""Storage behind one interface (``base.Store``); SQLite is the implementation today.

``Store`` here names the SQLite store for the code (and tests) that open one by path;
code that only *uses* a store types it as ``base.Store``.
"""

from __future__ import annotations

from botsched.core.model import Due, Event, NewBot, new_bot_id
from botsched.daemon.store.base import (
    Change,
    DatabaseGone,
    DuplicateKeys,
    IllegalTransition,
    KeyClash,
    NotScheduled,
    StorageError,
)
from botsched.daemon.store.schema import SCHEMA_VERSION
from botsched.daemon.store.sqlite import SqliteStore

Store = SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "Change",
    "DatabaseGone",
    "Due",
    "DuplicateKeys",
    "Event",
    "IllegalTransition",
    "KeyClash",
    "NewBot",
    "NotScheduled",
    "SqliteStore",
    "StorageError",
    "Store",
    "new_bot_id",
]
