"""One signed POST per attempt, with aiohttp: no redirects, a hard total timeout.

The sender never raises for a bad endpoint: every failure becomes an ``Outcome`` the
schedule classifies, so one broken receiver cannot take the worker down.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import aiohttp

from botsched import __version__
from botsched.daemon.webhooks.outbox import Claim
from botsched.daemon.webhooks.schedule import TIMEOUT_SECONDS, Outcome
from botsched.daemon.webhooks.signing import sign_headers

#: Bytes of an answer read (then dropped) so the connection can be reused.
_ANSWER_BYTES = 64 * 1024


class Sender:
    """Owns one ``ClientSession`` (connection reuse across deliveries); use ``async with``."""

    def __init__(self, timeout: float = TIMEOUT_SECONDS, connections: int = 64) -> None:
        self.timeout = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self._connections),
            headers={"user-agent": f"botsched/{__version__} (webhooks)"},
            trust_env=False,  # no proxy from the environment sees signed payloads by surprise
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, claim: Claim, timestamp: int) -> Outcome:
        """POST ``claim.body`` signed for ``timestamp``; the answer or the error, never a raise."""
        if self._session is None:
            raise RuntimeError("Sender used outside 'async with'")
        headers = {"content-type": "application/json"}
        headers.update(
            sign_headers(claim.secret, claim.event_id, timestamp, claim.body)
        )
        try:
            async with self._session.post(
                claim.url,
                data=claim.body.encode(),
                headers=headers,
                allow_redirects=False,
            ) as answer:
                await answer.content.read(_ANSWER_BYTES)
                return Outcome(
                    status=answer.status, retry_after=answer.headers.get("retry-after")
                )
        except TimeoutError:
            return Outcome(error=f"timeout: no answer within {self.timeout:g} s")
        except aiohttp.ClientError as exc:
            return Outcome(
                error=_short(f"connection error: {type(exc).__name__}: {exc}")
            )
        except (
            OSError,
            ValueError,
        ) as exc:  # a refused socket below aiohttp, an unusable URL
            return Outcome(error=_short(f"connection error: {exc}"))
        except asyncio.CancelledError:
            raise


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
