"""Errors that carry their retry policy, and one bounded backoff loop (kopf's temporary/permanent
split): the Kubernetes and Prometheus edges raise these, the controller never guesses.

    TemporaryError(delay_s)   try again later (5xx, 429 with Retry-After, timeouts, refused)
      ConflictError           409: re-read, then try again (resourceVersion moved on)
    PermanentError            retrying will not help (403, 404, 422, a bad query)

`retry(fn, backoff, sleep=...)` runs `fn` until it succeeds, raises a permanent error, or the
backoff's attempts or deadline run out; every wait is bounded by `max_delay_s`, a server's
Retry-After included (a 429 asking for 60 s must not stall a 15 s tick).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class ControllerError(Exception):
    """An error at one of the controller's edges (API server, Prometheus)."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TemporaryError(ControllerError):
    """Worth another try; `delay_s` is what the server asked for (Retry-After), if anything."""

    retryable = True

    def __init__(
        self, message: str, *, status: int | None = None, delay_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.delay_s = delay_s


class ConflictError(TemporaryError):
    """409 Conflict: the object changed since it was read; re-read before trying again."""


class PermanentError(ControllerError):
    """Retrying will not help: fix the config, the RBAC or the target."""


class NotFoundError(PermanentError):
    pass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt k waits uniform(0, min(max, base x factor^k)),
    at most `attempts` tries and `deadline_s` in all (e.g. 0.2, 0.4, 0.8 s: 4 tries in < 1.5 s)."""

    attempts: int = 4
    base_delay_s: float = 0.2
    factor: float = 2.0
    max_delay_s: float = 2.0
    deadline_s: float = 5.0

    def delay_s(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        cap = min(self.max_delay_s, self.base_delay_s * self.factor**attempt)
        return cap * rng()


def retry(
    fn: Callable[[], T],
    backoff: Backoff,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[ControllerError, int, float], None] | None = None,
) -> T:
    """Call `fn` with `backoff`; re-raises the last error when the attempts or deadline run out."""
    start = monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except TemporaryError as e:
            attempt += 1
            delay = backoff.delay_s(attempt - 1, rng)
            if e.delay_s is not None:
                delay = max(delay, min(e.delay_s, backoff.max_delay_s))
            if attempt >= backoff.attempts or monotonic() - start + delay > backoff.deadline_s:
                raise
            if on_retry is not None:
                on_retry(e, attempt, delay)
            sleep(delay)
