"""Fault injection for tests: per path, a share of requests answered 500 or 429, added latency,
and dropped connections (closed without an answer), drawn from a seeded RNG."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultRule:
    """Faults for requests whose path matches `path_regex` (re.search) and, if given, whose
    method is in `methods`. Rates are probabilities per request, drawn in the order drop, 500,
    429; `latency_s` is added before any answer."""

    path_regex: str
    error_rate_500: float = 0.0
    error_rate_429: float = 0.0
    latency_s: float = 0.0
    drop_rate: float = 0.0
    retry_after_s: int = 1
    methods: tuple[str, ...] = ()
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("error_rate_500", "error_rate_429", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} = {value}, must be within [0, 1]")
        if self.latency_s < 0:
            raise ValueError(f"latency_s = {self.latency_s}, must be >= 0")
        object.__setattr__(self, "_pattern", re.compile(self.path_regex))

    def applies(self, method: str, path: str) -> bool:
        return (not self.methods or method.upper() in self.methods) and bool(
            self._pattern.search(path)
        )


@dataclass(frozen=True)
class FaultDecision:
    latency_s: float = 0.0
    drop: bool = False
    status: int | None = None  # 500 or 429
    retry_after_s: int = 1


class FaultInjector:
    """Thread-safe: tests set rules from their thread while the server's loop reads them."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: list[FaultRule] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def decide(self, method: str, path: str) -> FaultDecision:
        with self._lock:
            latency, drop, status, retry_after = 0.0, False, None, 1
            for rule in self._rules:
                if not rule.applies(method, path):
                    continue
                latency += rule.latency_s
                if not drop and status is None:
                    if rule.drop_rate and self._rng.random() < rule.drop_rate:
                        drop = True
                    elif rule.error_rate_500 and self._rng.random() < rule.error_rate_500:
                        status = 500
                    elif rule.error_rate_429 and self._rng.random() < rule.error_rate_429:
                        status, retry_after = 429, rule.retry_after_s
            return FaultDecision(latency, drop, status, retry_after)
