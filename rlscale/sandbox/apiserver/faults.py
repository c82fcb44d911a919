"""Fault injection: per path, a share of requests answered 500, 429 or 409, added latency,
dropped connections (closed before the request is carried out) and lost answers (carried out,
then closed without the answer: a write that landed but whose client saw a timeout), drawn from
a seeded RNG. Rules come from Python (`Sandbox.set_faults`), from `rlscale sandbox --fault`, or
over HTTP (`/rlscale-sandbox/v1/faults` on the stand-in API server)."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field

RATES = ("error_rate_500", "error_rate_429", "error_rate_409", "drop_rate", "lose_rate")


@dataclass(frozen=True)
class FaultRule:
    """Faults for requests whose path matches `path_regex` (re.search) and, if given, whose
    method is in `methods`. Rates are probabilities per request, drawn in the order drop, lose,
    500, 429, 409; `latency_s` is added before any answer."""

    path_regex: str
    error_rate_500: float = 0.0
    error_rate_429: float = 0.0
    latency_s: float = 0.0
    drop_rate: float = 0.0
    retry_after_s: int = 1
    methods: tuple[str, ...] = ()
    error_rate_409: float = 0.0  # a 409 Conflict storm (resourceVersion "moved on")
    lose_rate: float = 0.0  # carried out, then the connection is closed without the answer
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} = {value}, must be within [0, 1]")
        if self.latency_s < 0:
            raise ValueError(f"latency_s = {self.latency_s}, must be >= 0")
        object.__setattr__(self, "_pattern", re.compile(self.path_regex))

    @classmethod
    def parse(cls, text: str) -> FaultRule:
        """`PATH_REGEX[@METHOD,...]:KEY=VALUE,...`, e.g. `/scale$@PATCH:lose_rate=1` or
        `deployments:error_rate_409=0.5,latency_s=0.2` (keys: the rule's fields)."""
        head, sep, body = text.rpartition(":")
        if not sep or not head:
            raise ValueError(f"{text!r}: expected PATH_REGEX[@METHODS]:KEY=VALUE,...")
        path, _, methods = head.partition("@")
        values: dict[str, float] = {}
        for item in filter(None, body.split(",")):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in (*RATES, "latency_s", "retry_after_s"):
                raise ValueError(
                    f"{item!r}: expected KEY=VALUE with KEY one of "
                    f"{', '.join((*RATES, 'latency_s', 'retry_after_s'))}"
                )
            values[key] = float(value)
        retry_after = int(values.pop("retry_after_s", 1))
        return cls(
            path,
            methods=tuple(m.strip().upper() for m in methods.split(",") if m.strip()),
            retry_after_s=retry_after,
            **values,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "path_regex": self.path_regex,
            "methods": list(self.methods),
            "latency_s": self.latency_s,
            "retry_after_s": self.retry_after_s,
            **{name: getattr(self, name) for name in RATES},
        }

    def applies(self, method: str, path: str) -> bool:
        return (not self.methods or method.upper() in self.methods) and bool(
            self._pattern.search(path)
        )


@dataclass(frozen=True)
class FaultDecision:
    latency_s: float = 0.0
    drop: bool = False
    status: int | None = None  # 500, 429 or 409
    retry_after_s: int = 1
    lose: bool = False  # carry the request out, then close the connection unanswered


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
            latency, drop, lose, status, retry_after = 0.0, False, False, None, 1
            for rule in self._rules:
                if not rule.applies(method, path):
                    continue
                latency += rule.latency_s
                if not drop and not lose and status is None:
                    if rule.drop_rate and self._rng.random() < rule.drop_rate:
                        drop = True
                    elif rule.lose_rate and self._rng.random() < rule.lose_rate:
                        lose = True
                    elif rule.error_rate_500 and self._rng.random() < rule.error_rate_500:
                        status = 500
                    elif rule.error_rate_429 and self._rng.random() < rule.error_rate_429:
                        status, retry_after = 429, rule.retry_after_s
                    elif rule.error_rate_409 and self._rng.random() < rule.error_rate_409:
                        status = 409
            return FaultDecision(latency, drop, status, retry_after, lose)
