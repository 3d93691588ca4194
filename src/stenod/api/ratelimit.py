"""Per-key limits (issue 16): requests per minute, audio minutes per hour and requests at once,
enforced with the ``limits`` library. With ``[server] rate_limit_storage_url`` pointing at Redis,
every API server shares the counters, so a key's limits hold across a fleet; without it they are
kept in this process.

Requests per minute are counted in the auth dependency (every authenticated route); audio minutes
and concurrency are charged by the transcription service once the upload's duration is known
(:class:`KeyQuota`). Refusals are 429 with ``Retry-After`` and ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until the window frees up); allowed
requests carry the same ``X-RateLimit-*`` headers for their requests-per-minute window.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from limits import RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from stenod.errors import RateLimitedError
from stenod.storage.key_store import KeyPolicy

KEY_PREFIX = "stenod"
CONCURRENCY_TTL_S = 3600
"""A concurrency slot of a server that died is forgotten after this long (Redis key expiry)."""


class RateLimits:
    def __init__(self, storage_url: str = "") -> None:
        url = storage_url or "memory://"
        options = {"key_prefix": KEY_PREFIX} if url.startswith(("redis", "rediss", "valkey")) else {}
        # A synchronous storage (not an async:// URL), whatever the URL's scheme.
        self.storage = cast(Storage, storage_from_string(url, **options))
        self.limiter = MovingWindowRateLimiter(self.storage)

    def hit_request(self, key_id: str, policy: KeyPolicy) -> dict[str, str]:
        """Count one request; returns the X-RateLimit headers for the response.

        Raises:
            RateLimitedError: over ``requests_per_minute``.
        """
        if policy.requests_per_minute is None:
            return {}
        item = RateLimitItemPerMinute(policy.requests_per_minute)
        allowed = self.limiter.hit(item, "rpm", key_id)
        headers = self._headers(item, key_id, "rpm")
        if not allowed:
            raise RateLimitedError(
                f"rate limit: {policy.requests_per_minute} requests per minute for this key",
                retry_after_s=float(headers["X-RateLimit-Reset"]), headers=headers,
            )
        return headers

    def charge_audio(self, key_id: str, policy: KeyPolicy, seconds: float) -> None:
        """Charge ``seconds`` of audio against ``audio_minutes_per_hour``.

        Raises:
            RateLimitedError: the hour's allowance would be exceeded (nothing is charged then).
        """
        if policy.audio_minutes_per_hour is None:
            return
        item = RateLimitItemPerHour(max(1, int(policy.audio_minutes_per_hour * 60)))
        cost = max(1, math.ceil(seconds))
        if cost > item.amount:
            raise RateLimitedError(
                f"this audio is {seconds / 60:.1f} min long; this key may send {policy.audio_minutes_per_hour:g} "
                "audio minutes per hour", retry_after_s=3600.0, headers=self._headers(item, key_id, "apm"),
            )
        if not self.limiter.hit(item, "apm", key_id, cost=cost):
            headers = self._headers(item, key_id, "apm")
            raise RateLimitedError(
                f"rate limit: {policy.audio_minutes_per_hour:g} audio minutes per hour for this key",
                retry_after_s=float(headers["X-RateLimit-Reset"]), headers=headers,
            )

    @contextmanager
    def concurrent(self, key_id: str, policy: KeyPolicy) -> Iterator[None]:
        """Hold one of the key's ``max_concurrency`` slots for the block.

        Raises:
            RateLimitedError: the key already has that many requests in flight.
        """
        if policy.max_concurrency is None:
            yield
            return
        key = f"{KEY_PREFIX}/concurrency/{key_id}"
        in_flight = self.storage.incr(key, CONCURRENCY_TTL_S)
        try:
            if in_flight > policy.max_concurrency:
                raise RateLimitedError(
                    f"this key already has {policy.max_concurrency} request(s) in flight (its limit)",
                    retry_after_s=1.0, headers={"X-RateLimit-Limit": str(policy.max_concurrency),
                                                 "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"},
                )
            yield
        finally:
            self.storage.incr(key, CONCURRENCY_TTL_S, amount=-1)

    def _headers(self, item: RateLimitItemPerMinute | RateLimitItemPerHour, key_id: str, kind: str) -> dict[str, str]:
        stats = self.limiter.get_window_stats(item, kind, key_id)
        reset_s = max(1, math.ceil(stats.reset_time - time.time()))
        return {"X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": str(max(0, stats.remaining)),
                "X-RateLimit-Reset": str(reset_s)}


class KeyQuota:
    """What the transcription service charges for one request of one key."""

    def __init__(self, limits: RateLimits, key_id: str, policy: KeyPolicy) -> None:
        self._limits = limits
        self._key_id = key_id
        self._policy = policy

    def charge_audio(self, seconds: float) -> None:
        self._limits.charge_audio(self._key_id, self._policy, seconds)

    def concurrent(self) -> contextlib.AbstractContextManager[None]:
        return self._limits.concurrent(self._key_id, self._policy)
