"""Store URLs (pure rules): which store a URL selects, and that a password in one is never
shown, wherever it sits in the URL."""

from __future__ import annotations

import pytest

from botsched.core import config
from botsched.core.errors import InvalidInput


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("", ""),
        ("postgresql://agent@db.example/botsched", "postgresql://agent@db.example/botsched"),
        ("postgresql://agent:s%40cr3t@db.example:5433/botsched?sslmode=require",
         "postgresql://agent:***@db.example:5433/botsched?sslmode=require"),
        ("postgres://:only-pw@db/x", "postgres://:***@db/x"),
        ("postgresql:///botsched?host=/run/postgresql&password=hunter2&sslmode=disable",
         "postgresql:///botsched?host=/run/postgresql&password=***&sslmode=disable"),
        ("postgresql://u:a@h/db?password=b", "postgresql://u:***@h/db?password=***"),
        ("postgresql://[::1/broken:pw", "***"),  # not parseable: nothing of it is shown
    ],
)
def test_redact_url_masks_every_password(url: str, shown: str) -> None:
    assert config.redact_url(url) == shown


def test_store_url_key_takes_postgres_urls_only_and_never_echoes_a_password() -> None:
    assert config.validate_value("store.url", "postgresql://u@h/db") == "postgresql://u@h/db"
    assert config.validate_value("store.url", "") == ""
    with pytest.raises(InvalidInput) as info:
        config.validate_value("store.url", "mysql://root:hunter2@db/x")
    assert "hunter2" not in info.value.message and "root:***@db" in info.value.message
    assert config.masked("store.url", "postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_env_overrides_the_config_key(monkeypatch: pytest.MonkeyPatch) -> None:
    values = config.defaults()
    values["store.url"] = "postgresql://from-config/db"
    loaded = config.Config(values)
    monkeypatch.delenv(config.STORE_URL_ENV, raising=False)
    assert config.store_url(loaded) == "postgresql://from-config/db"
    monkeypatch.setenv(config.STORE_URL_ENV, "postgresql://from-env/db")
    assert config.store_url(loaded) == "postgresql://from-env/db"
    values["store.url"] = "postgresql://u:pw@h/db"
    assert config.Config(values).as_dict()["store.url"] == "postgresql://u:***@h/db"
    assert config.Config(values).as_dict(mask_secrets=False)["store.url"] == "postgresql://u:pw@h/db"
