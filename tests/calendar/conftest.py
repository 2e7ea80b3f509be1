"""Fixtures of the calendar sync tests (helpers live in ``calsync_helpers``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from calsync_helpers import EMAIL, HOME_ENV

from tests.support.home import Home, Homes

CONFIG = f"""\
[calendar]
email = "{EMAIL}"
# followed calendars may poll every second here (a minute at the least by default)
min_every_seconds = 1

[defaults]
timezone = "Europe/Berlin"
"""


@pytest.fixture
def make_home(make_home: Homes) -> Callable[[str], Home]:
    """Factory for fresh homes with the calendar settings (each with its own daemon, killed at teardown)."""

    def factory(extra_config: str = "") -> Home:
        return make_home(CONFIG + extra_config, env=HOME_ENV)

    return factory


@pytest.fixture
def home(make_home: Callable[[str], Home]) -> Home:
    return make_home()
