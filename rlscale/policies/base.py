"""The `Policy` protocol: the evaluator, the environment and the live controller hold any policy
through it and never care which one it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rlscale.contract import IntervalMetrics


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's proposal: the replica count it wants and why.

    `warm_replicas` is the standby pool size it wants, or None when the policy does not manage a
    warm pool (the target's configured pool then stays as it is). The proposal still goes through
    `rlscale.safety.clamp` before anything acts on it.
    """

    replicas: int
    reason: str
    warm_replicas: int | None = None


@runtime_checkable
class Policy(Protocol):
    """decide(window) -> Decision, where `window` is the recent IntervalMetrics, oldest first; the
    last entry is the interval that just ended, and its `replicas_desired` is the current scale.

    A policy may keep state between calls (the HPA's recommendation history, a forecaster's
    history); `reset()` clears it at the start of an episode. Time comes from the metrics'
    `time_s`, never from the wall clock, so simulation and tests control it.
    """

    name: str

    def reset(self) -> None: ...

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision: ...
