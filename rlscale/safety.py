"""Safety clamps between a policy's proposal and the cluster: the same code in the simulator (so the
agent trains under the limits it meets in production) and in the live controller.

The pipeline follows the Kubernetes HPA (`horizontal.go`, autoscaling/v2 `behavior`), in order:

1. tolerance: a proposal within `tolerance` of the current count is no change;
2. stabilisation: the recommendation is the min of the proposals in the scale-up window (so a
   blip up is not acted on) and the max of those in the scale-down window (so a dip is not);
3. rate limits: per direction, `Pods`/`Percent` policies over `period_s`, combined by
   `select_policy` (Max = the most permissive, Min = the least, Disabled = no change that way),
   counted against the changes this clamp made inside each period;
4. min/max replicas and the GPU budget.

Each limiter that bites sets a reason flag (`ScaleUpLimit`, `ScaleDownStabilized`, ...), as the
HPA sets its conditions. Everything is batched over B clusters in numpy; the controller uses B=1.
Time is passed in (`now_s`); nothing here reads a clock.

`clamp_batch` runs the `behavior` pipeline through one numba kernel (`_clamp_rows`, per cluster,
~40 numpy calls on 1-element arrays cost ~45 us at B = 1); `clamp_batch_reference` is the numpy
pipeline it transcribes and is held to (tests/test_safety.py). Every step is a comparison,
min/max, floor/ceil or a sum of whole replica counts, so the two agree exactly. The legacy
normalisation, and any place numba is missing, use the numpy pipeline.

Two upstream behaviours are options, so a caller chooses them visibly:

* `ClampState.empty(..., initial_recommendation=True)`: the first clamp of each cluster (and the
  first after `reset`) records the current count as a recommendation before the proposal, as
  `recordInitialRecommendation` does when the HPA controller first sees an HPA. The first
  scale-down then waits out the whole down-stabilisation window (upstream
  `TestScaleDownStabilizeInitialSize`: 5 replicas proposed 3 stay 5). Off by default: without it a
  fresh clamp (a controller restart, an evaluation episode) may scale down at t = 0.
* `SafetyLimits.legacy_behavior=True`: an HPA manifest with no `behavior` section, which upstream
  normalises with its pre-`behavior` rules (`normalizeDesiredReplicas`): the recommendation is the
  max over the down window (window-old samples included, `Before(cutoff)` drops only older ones),
  and one sync may scale up to at most max(2 x current, 4) (`calculateScaleUpLimit`); the
  `scale_up`/`scale_down` policies are not used. `rlscale.policies.hpa` sets it for such manifests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

REASONS: tuple[str, ...] = (
    "WithinTolerance",
    "ScaleUpStabilized",
    "ScaleDownStabilized",
    "ScaleUpLimit",
    "ScaleDownLimit",
    "TooFewReplicas",
    "TooManyReplicas",
    "GPUBudget",
)
_BIT = {name: 1 << i for i, name in enumerate(REASONS)}


class ScalingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["Pods", "Percent"]
    value: float = Field(gt=0)
    period_s: float = Field(gt=0, le=1800)


class ScalingRules(BaseModel):
    """One direction of the HPA `behavior`: stabilisation window, policies, select policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stabilization_window_s: float = Field(default=0.0, ge=0, le=3600)
    policies: tuple[ScalingPolicy, ...] = ()
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"


# The HPA's defaults (autoscaling/v2 `defaultHPAScaleUpRules` / `...ScaleDownRules`, in their
# order): up +4 pods or +100% per 15 s, no up window; down 100% per 15 s after a 300 s window (the
# controller's --horizontal-pod-autoscaler-downscale-stabilization default; the API leaves it nil).
HPA_DEFAULT_UP = ScalingRules(
    stabilization_window_s=0,
    policies=(
        ScalingPolicy(type="Pods", value=4, period_s=15),
        ScalingPolicy(type="Percent", value=100, period_s=15),
    ),
)
HPA_DEFAULT_DOWN = ScalingRules(
    stabilization_window_s=300, policies=(ScalingPolicy(type="Percent", value=100, period_s=15),)
)


class SafetyLimits(BaseModel):
    """Limits a target never leaves, whatever its policy proposes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=20, ge=1)
    tolerance: float = Field(default=0.0, ge=0, lt=1)
    scale_up: ScalingRules = ScalingRules()
    scale_down: ScalingRules = ScalingRules()
    gpus_per_replica: int = Field(default=1, ge=1)
    max_gpus: int | None = Field(default=None, ge=1)  # budget for ready+starting+warm replicas
    max_warm_replicas: int = Field(default=0, ge=0)
    # The HPA's normalisation for a manifest without `behavior` (see the module docstring); the
    # stabilisation window is `scale_down.stabilization_window_s`.
    legacy_behavior: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> SafetyLimits:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas = {self.max_replicas}, must be >= min_replicas ({self.min_replicas})"
            )
        if self.max_gpus is not None and self.max_gpus < self.min_replicas * self.gpus_per_replica:
            raise ValueError(
                f"max_gpus = {self.max_gpus}, must be >= min_replicas x gpus_per_replica "
                f"({self.min_replicas * self.gpus_per_replica})"
            )
        return self

    @property
    def history_s(self) -> float:
        spans = [self.scale_up.stabilization_window_s, self.scale_down.stabilization_window_s]
        spans += [p.period_s for p in self.scale_up.policies + self.scale_down.policies]
        return max(spans + [0.0])


@dataclass
class ClampState:
    """What the clamp remembers: recent proposals (for stabilisation) and its own recent changes
    (for rate limits). Slots are shared by the batch, which steps in lockstep; `times_s` of an
    empty slot is -inf so it is never inside a window.

    With `initial_recommendation`, a cluster's first clamp records its current count at that
    time (`initial` / `initial_time_s`, per cluster because a reset cluster starts over alone):
    upstream's `recordInitialRecommendation`, so a fresh clamp does not scale down before its
    down-stabilisation window has passed."""

    times_s: np.ndarray  # (H,)
    proposals: np.ndarray  # (B, H)
    added: np.ndarray  # (B, H) replicas added by the change at that time
    removed: np.ndarray  # (B, H) replicas removed
    cursor: int = 0
    initial_recommendation: bool = False
    initial: np.ndarray | None = None  # (B,) the count recorded at the first clamp; NaN: none
    initial_time_s: np.ndarray | None = None  # (B,) when; -inf: none
    armed: np.ndarray | None = None  # (B,) bool: record at the next clamp

    @classmethod
    def empty(
        cls,
        batch: int,
        limits: SafetyLimits,
        interval_s: float,
        *,
        initial_recommendation: bool = False,
    ) -> ClampState:
        slots = int(math.ceil(limits.history_s / max(interval_s, 1e-3))) + 2
        return cls(
            times_s=np.full(slots, -np.inf),
            proposals=np.zeros((batch, slots)),
            added=np.zeros((batch, slots)),
            removed=np.zeros((batch, slots)),
            initial_recommendation=initial_recommendation,
            initial=np.full(batch, np.nan),
            initial_time_s=np.full(batch, -np.inf),
            armed=np.full(batch, initial_recommendation),
        )

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget the history (of the clusters in `mask`, or all); with `initial_recommendation`
        their next clamp records the current count again, as a restarted HPA controller does."""
        if self.initial is not None and self.initial_time_s is not None and self.armed is not None:
            rows = slice(None) if mask is None else mask
            self.initial[rows] = np.nan
            self.initial_time_s[rows] = -np.inf
            self.armed[rows] = self.initial_recommendation
        if mask is None:
            self.times_s[:] = -np.inf
            self.proposals[:] = 0
            self.added[:] = 0
            self.removed[:] = 0
        else:
            self.added[mask] = 0
            self.removed[mask] = 0
            # Slot times are shared by the batch, so a reset cluster's old slots stay in the
            # windows; NaN marks them "no opinion" (clamp_batch reads them as the new proposal).
            self.proposals[mask] = np.nan


def _rate_limit(rules: ScalingRules, start: np.ndarray, up: bool) -> np.ndarray:
    """The most (up) or least (down) replicas reachable from `start` (replicas at the start of
    each policy's period), per HPA `calculateScaleUpLimitWithScalingRules` / `...ScaleDown...`."""
    if rules.select_policy == "Disabled" or not rules.policies:
        return (
            start[0]
            if rules.select_policy == "Disabled"
            else np.full_like(start[0], np.inf if up else -np.inf)
        )
    limits = []
    for i, p in enumerate(rules.policies):
        s = start[i]
        if up:
            lim = s + p.value if p.type == "Pods" else np.ceil(s * (1 + p.value / 100.0))
        else:
            lim = s - p.value if p.type == "Pods" else np.floor(s * (1 - p.value / 100.0))
        limits.append(lim)
    stack = np.stack(limits)
    pick_max = (rules.select_policy == "Max") == up  # Max up = largest, Max down = smallest
    return stack.max(axis=0) if pick_max else stack.min(axis=0)


def _within_tolerance(
    proposed: np.ndarray, current: np.ndarray, limits: SafetyLimits
) -> tuple[np.ndarray, np.ndarray]:
    """1. HPA tolerance: |ratio - 1| <= tolerance keeps the current count. (proposal, reason bits)"""
    if limits.tolerance <= 0:
        return proposed, np.zeros(proposed.shape, dtype=np.int64)
    within = (np.abs(proposed - current) <= limits.tolerance * np.maximum(current, 1.0)) & (
        proposed != current
    )
    return np.where(within, current, proposed), np.where(within, _BIT["WithinTolerance"], 0)


def _record_initial(state: ClampState, now_s: float, current: np.ndarray) -> None:
    """`recordInitialRecommendation`: the current count of each armed cluster, once, before its
    first proposal."""
    if state.armed is None or not state.armed.any():
        return
    assert state.initial is not None and state.initial_time_s is not None
    arm = state.armed.copy()
    state.initial[arm] = current[arm]
    state.initial_time_s[arm] = now_s
    state.armed[arm] = False


def _initial_in(state: ClampState, cutoff_s: float, *, inclusive: bool) -> np.ndarray:
    """(B,) whether a cluster's initial recommendation is in a window starting at `cutoff_s`.
    It was recorded just before the first proposal, so a 0 s window never holds it (upstream:
    the timestamp is not After(now))."""
    if state.initial is None or state.initial_time_s is None:
        return np.zeros(0, dtype=bool)
    seeded = np.isfinite(state.initial)
    if inclusive:
        return seeded & (state.initial_time_s >= cutoff_s - 1e-9)
    return seeded & (state.initial_time_s > cutoff_s + 1e-9)


def _record_proposal(state: ClampState, now_s: float, proposed: np.ndarray) -> int:
    """Store the proposal first (the HPA's windows include the newest recommendation); its slot."""
    slot = state.cursor % len(state.times_s)
    state.times_s[slot] = now_s
    state.proposals[:, slot] = proposed
    state.added[:, slot] = 0
    state.removed[:, slot] = 0
    state.cursor += 1
    return slot


def _stabilised(
    proposed: np.ndarray,
    current: np.ndarray,
    now_s: float,
    limits: SafetyLimits,
    state: ClampState,
    slot: int,
) -> tuple[np.ndarray, np.ndarray]:
    """2. The min of the proposals in the scale-up window, the max of those in the scale-down
    window, around the current count. (recommendation, reason bits)"""
    # A reset cluster (NaN history) has no opinion in the window: use its own proposal.
    hist = np.where(np.isnan(state.proposals), proposed[:, None], state.proposals)
    # strictly inside the window, as the HPA's timestamp.After(cutoff)
    up_win = state.times_s > now_s - limits.scale_up.stabilization_window_s + 1e-9
    down_win = state.times_s > now_s - limits.scale_down.stabilization_window_s + 1e-9
    up_win[slot] = down_win[slot] = True
    up_rec = np.where(up_win[None, :], hist, np.inf).min(axis=1)
    down_rec = np.where(down_win[None, :], hist, -np.inf).max(axis=1)
    if state.initial is not None:
        seed = np.nan_to_num(state.initial)
        in_up = _initial_in(state, now_s - limits.scale_up.stabilization_window_s, inclusive=False)
        in_down = _initial_in(
            state, now_s - limits.scale_down.stabilization_window_s, inclusive=False
        )
        up_rec = np.where(in_up, np.minimum(up_rec, seed), up_rec)
        down_rec = np.where(in_down, np.maximum(down_rec, seed), down_rec)
    rec = np.maximum(current, up_rec)
    rec = np.minimum(rec, down_rec)
    reasons = np.where((proposed > current) & (rec < proposed), _BIT["ScaleUpStabilized"], 0)
    reasons |= np.where((proposed < current) & (rec > proposed), _BIT["ScaleDownStabilized"], 0)
    return rec, reasons


def _stabilised_legacy(
    proposed: np.ndarray, now_s: float, limits: SafetyLimits, state: ClampState, slot: int
) -> tuple[np.ndarray, np.ndarray]:
    """2, without `behavior` (`stabilizeRecommendation`): the max of the recommendations not
    older than the window, which may lie above the current count. (recommendation, reason bits)"""
    hist = np.where(np.isnan(state.proposals), proposed[:, None], state.proposals)
    cutoff_s = now_s - limits.scale_down.stabilization_window_s
    # kept unless Before(cutoff): a sample exactly window_s old is still in
    win = state.times_s >= cutoff_s - 1e-9
    win[slot] = True
    rec = np.where(win[None, :], hist, -np.inf).max(axis=1)
    if state.initial is not None:
        rec = np.where(
            _initial_in(state, cutoff_s, inclusive=True),
            np.maximum(rec, np.nan_to_num(state.initial)),
            rec,
        )
    return rec, np.where(rec > proposed, _BIT["ScaleDownStabilized"], 0)


def _period_starts(
    rules: ScalingRules, current: np.ndarray, now_s: float, state: ClampState, slot: int
) -> np.ndarray:
    """(P, B) replicas at the start of each policy's period.

    HPA: periodStartReplicas = current - added + deleted within the period, whichever way the
    clamp is now going (e.g. 10 -> 6 at t=0, then at t=15 a scale-up policy of Pods 4/60 s
    starts from 6 - 0 + 4 = 10 and allows 14)."""
    if not rules.policies:
        return current[None, :]
    rows = []
    for p in rules.policies:
        in_period = state.times_s > now_s - p.period_s + 1e-9
        in_period[slot] = False
        mask = in_period[None, :]
        rows.append(current - (state.added * mask).sum(axis=1) + (state.removed * mask).sum(axis=1))
    return np.stack(rows)


def _rate_limited(
    rec: np.ndarray,
    current: np.ndarray,
    now_s: float,
    limits: SafetyLimits,
    state: ClampState,
    slot: int,
) -> tuple[np.ndarray, np.ndarray]:
    """3. Rate limits against this clamp's own changes inside each policy period. (replicas, bits)"""
    up_limit = _rate_limit(
        limits.scale_up, _period_starts(limits.scale_up, current, now_s, state, slot), up=True
    )
    down_limit = _rate_limit(
        limits.scale_down, _period_starts(limits.scale_down, current, now_s, state, slot), up=False
    )
    # The HPA never lets a rate limit push below/above the current count.
    up_limit = np.maximum(up_limit, current)
    down_limit = np.minimum(down_limit, current)
    out = rec.copy()
    hit_up = out > up_limit
    hit_down = out < down_limit
    out = np.where(hit_up, up_limit, np.where(hit_down, down_limit, out))
    return out, np.where(hit_up, _BIT["ScaleUpLimit"], 0) | np.where(
        hit_down, _BIT["ScaleDownLimit"], 0
    )


def _legacy_limited(
    rec: np.ndarray, current: np.ndarray, limits: SafetyLimits
) -> tuple[np.ndarray, np.ndarray]:
    """3, without `behavior` (`convertDesiredReplicasWithRules`): at most max(2 x current, 4)
    per sync, no scale-down limit. (replicas, bits)"""
    up_limit = np.maximum(2.0 * current, 4.0)
    # upstream names the limit TooManyReplicas when maxReplicas is the tighter one
    hit_up = (rec > up_limit) & (up_limit < limits.max_replicas)
    return np.minimum(rec, up_limit), np.where(hit_up, _BIT["ScaleUpLimit"], 0)


def _within_bounds(
    out: np.ndarray, limits: SafetyLimits, warm: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """4. min/max replicas, then the GPU budget (less the warm pool, never below min). (replicas, bits)"""
    low = out < limits.min_replicas
    high = out > limits.max_replicas
    out = np.clip(out, limits.min_replicas, limits.max_replicas)
    reasons = np.where(low, _BIT["TooFewReplicas"], 0) | np.where(high, _BIT["TooManyReplicas"], 0)
    if limits.max_gpus is not None:
        w = np.zeros_like(out) if warm is None else np.asarray(warm, dtype=np.float64)
        budget = np.floor(limits.max_gpus / limits.gpus_per_replica) - w
        budget = np.maximum(budget, limits.min_replicas)
        over = out > budget
        out = np.where(over, budget, out)
        reasons |= np.where(over, _BIT["GPUBudget"], 0)
    return out, reasons


def clamp_batch_reference(
    proposed: np.ndarray,
    current: np.ndarray,
    now_s: float,
    limits: SafetyLimits,
    state: ClampState,
    *,
    warm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Clamp proposals (B,) given current replicas (B,); returns (replicas (B,) int64, reason bits
    (B,) int64) and records this step in `state`. `warm` (B,) counts against the GPU budget."""
    proposed = np.asarray(proposed, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    proposed, reasons = _within_tolerance(proposed, current, limits)
    _record_initial(state, now_s, current)
    slot = _record_proposal(state, now_s, proposed)
    if limits.legacy_behavior:
        rec, bits = _stabilised_legacy(proposed, now_s, limits, state, slot)
        reasons |= bits
        limited, bits = _legacy_limited(rec, current, limits)
    else:
        rec, bits = _stabilised(proposed, current, now_s, limits, state, slot)
        reasons |= bits
        limited, bits = _rate_limited(rec, current, now_s, limits, state, slot)
    reasons |= bits
    bounded, bits = _within_bounds(limited, limits, warm)
    reasons |= bits
    out = np.rint(bounded).astype(np.int64)
    # what this step changed, for the rate limits of the steps after it
    delta = out - current
    state.added[:, slot] = np.maximum(delta, 0)
    state.removed[:, slot] = np.maximum(-delta, 0)
    return out, reasons


_SELECT = {"Max": 0, "Min": 1, "Disabled": 2}


def _clamp_rows(
    proposed: np.ndarray,
    current: np.ndarray,
    now_s: float,
    slot: int,
    fpar: np.ndarray,
    up_pol: np.ndarray,
    up_sel: int,
    down_pol: np.ndarray,
    down_sel: int,
    times_s: np.ndarray,
    proposals: np.ndarray,
    added: np.ndarray,
    removed: np.ndarray,
    initial: np.ndarray,
    initial_time_s: np.ndarray,
    armed: np.ndarray,
    warm: np.ndarray,
    out: np.ndarray,
    reasons: np.ndarray,
) -> None:
    """`clamp_batch_reference` (behavior path) per cluster, compiled by `_kernel`. The slot is
    already stamped with now_s. fpar = (tolerance, up window, down window, min, max, GPU budget
    in replicas or NaN); a policy row = (0 Pods / 1 Percent, value, period_s); select 0 Max,
    1 Min, 2 Disabled."""
    n_slots = times_s.shape[0]
    tol, up_w, down_w, lo, hi, gpu_budget = fpar[0], fpar[1], fpar[2], fpar[3], fpar[4], fpar[5]
    up_cut = now_s - up_w + 1e-9
    down_cut = now_s - down_w + 1e-9
    for b in range(proposed.shape[0]):
        p = proposed[b]
        c = current[b]
        bits = 0
        # 1. tolerance
        if tol > 0 and abs(p - c) <= tol * max(c, 1.0) and p != c:
            p = c
            bits |= 1  # WithinTolerance
        # recordInitialRecommendation, then the proposal into its slot
        if armed[b]:
            initial[b] = c
            initial_time_s[b] = now_s
            armed[b] = False
        proposals[b, slot] = p
        added[b, slot] = 0.0
        removed[b, slot] = 0.0
        # 2. stabilisation (NaN history: a reset cluster's, read as this proposal)
        up_rec = np.inf
        down_rec = -np.inf
        for k in range(n_slots):
            hv = proposals[b, k]
            if math.isnan(hv):
                hv = p
            if k == slot or times_s[k] > up_cut:
                up_rec = np.minimum(up_rec, hv)
            if k == slot or times_s[k] > down_cut:
                down_rec = np.maximum(down_rec, hv)
        init = initial[b]
        if math.isfinite(init):
            if initial_time_s[b] > now_s - up_w + 1e-9:
                up_rec = np.minimum(up_rec, init)
            if initial_time_s[b] > now_s - down_w + 1e-9:
                down_rec = np.maximum(down_rec, init)
        rec = np.minimum(np.maximum(c, up_rec), down_rec)
        if p > c and rec < p:
            bits |= 2  # ScaleUpStabilized
        if p < c and rec > p:
            bits |= 4  # ScaleDownStabilized
        # 3. rate limits against this clamp's own changes in each policy's period
        up_limit = np.inf
        down_limit = -np.inf
        for d in range(2):
            pol = up_pol if d == 0 else down_pol
            sel = up_sel if d == 0 else down_sel
            is_up = d == 0
            lim = np.inf if is_up else -np.inf
            first = True
            for i in range(pol.shape[0]):
                cut = now_s - pol[i, 2] + 1e-9
                a_sum = 0.0
                r_sum = 0.0
                for k in range(n_slots):
                    if k != slot and times_s[k] > cut:
                        a_sum += added[b, k]
                        r_sum += removed[b, k]
                start = c - a_sum + r_sum
                if sel == 2:  # Disabled: no change that way (from the first period's start)
                    lim = start
                    break
                if is_up:
                    li = start + pol[i, 1] if pol[i, 0] == 0 else np.ceil(start * pol[i, 3])
                else:
                    li = start - pol[i, 1] if pol[i, 0] == 0 else np.floor(start * pol[i, 3])
                if first:
                    lim = li
                    first = False
                elif (sel == 0) == is_up:
                    lim = np.maximum(lim, li)
                else:
                    lim = np.minimum(lim, li)
            if pol.shape[0] == 0 and sel == 2:
                lim = c
            if is_up:
                up_limit = lim
            else:
                down_limit = lim
        up_limit = np.maximum(up_limit, c)
        down_limit = np.minimum(down_limit, c)
        if rec > up_limit:
            rec = up_limit
            bits |= 8  # ScaleUpLimit
        elif rec < down_limit:
            rec = down_limit
            bits |= 16  # ScaleDownLimit
        # 4. min/max replicas, then the GPU budget less the warm pool
        if rec < lo:
            bits |= 32  # TooFewReplicas
        if rec > hi:
            bits |= 64  # TooManyReplicas
        rec = np.minimum(np.maximum(rec, lo), hi)
        if not math.isnan(gpu_budget):
            budget = np.maximum(gpu_budget - (warm[b] if warm.shape[0] else 0.0), lo)
            if rec > budget:
                rec = budget
                bits |= 128  # GPUBudget
        o = np.int64(np.rint(rec))
        delta = o - c
        added[b, slot] = max(delta, 0.0)
        removed[b, slot] = max(-delta, 0.0)
        out[b] = o
        reasons[b] = bits


_COMPILED: list[Callable[..., Any] | None] = []


def _kernel() -> Callable[..., Any] | None:
    """`_clamp_rows` compiled on first use (so importing this module, as the controller does,
    does not import numba); None where numba is missing. Cached on disk where writable."""
    if not _COMPILED:
        try:
            from numba import njit
        except ImportError:  # pragma: no cover - numba is a dependency; this is the fallback
            _COMPILED.append(None)
        else:
            try:
                _COMPILED.append(njit(cache=True)(_clamp_rows))
            except RuntimeError:  # no writable cache location (a read-only image)
                _COMPILED.append(njit(cache=False)(_clamp_rows))
    return _COMPILED[0]


def _policy_rows(rules: ScalingRules, up: bool) -> np.ndarray:
    """(P, 4): type (0 Pods, 1 Percent), value, period_s, the Percent factor as the reference
    computes it (1 +/- value / 100)."""
    rows = [
        (
            0.0 if p.type == "Pods" else 1.0,
            p.value,
            p.period_s,
            (1 + p.value / 100.0) if up else (1 - p.value / 100.0),
        )
        for p in rules.policies
    ]
    return np.array(rows, dtype=np.float64).reshape(len(rows), 4)


# limits -> kernel parameters, keyed by id() and checked by identity (a frozen model is hashable,
# but hashing it costs more than the clamp)
_PARAMS: dict[int, tuple[SafetyLimits, tuple[Any, ...]]] = {}


def _kernel_params(limits: SafetyLimits) -> tuple[Any, ...]:
    hit = _PARAMS.get(id(limits))
    if hit is not None and hit[0] is limits:
        return hit[1]
    budget = (
        float("nan")
        if limits.max_gpus is None
        else float(np.floor(limits.max_gpus / limits.gpus_per_replica))
    )
    fpar = np.array(
        [
            limits.tolerance,
            limits.scale_up.stabilization_window_s,
            limits.scale_down.stabilization_window_s,
            float(limits.min_replicas),
            float(limits.max_replicas),
            budget,
        ]
    )
    params = (
        fpar,
        _policy_rows(limits.scale_up, True),
        _SELECT[limits.scale_up.select_policy],
        _policy_rows(limits.scale_down, False),
        _SELECT[limits.scale_down.select_policy],
    )
    if len(_PARAMS) > 256:
        _PARAMS.clear()
    _PARAMS[id(limits)] = (limits, params)
    return params


_NO_WARM = np.zeros(0)


def clamp_batch(
    proposed: np.ndarray,
    current: np.ndarray,
    now_s: float,
    limits: SafetyLimits,
    state: ClampState,
    *,
    warm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Clamp proposals (B,) given current replicas (B,); returns (replicas (B,) int64, reason bits
    (B,) int64) and records this step in `state`. `warm` (B,) counts against the GPU budget."""
    kernel = None if limits.legacy_behavior else _kernel()
    if (
        kernel is None
        or state.initial is None
        or state.initial_time_s is None
        or state.armed is None
    ):
        return clamp_batch_reference(proposed, current, now_s, limits, state, warm=warm)
    p = np.ascontiguousarray(proposed, dtype=np.float64).reshape(-1)
    c = np.ascontiguousarray(current, dtype=np.float64).reshape(-1)
    w = _NO_WARM if warm is None else np.ascontiguousarray(warm, dtype=np.float64).reshape(-1)
    slot = state.cursor % len(state.times_s)
    state.times_s[slot] = now_s
    state.cursor += 1
    out = np.empty(p.shape[0], dtype=np.int64)
    reasons = np.empty(p.shape[0], dtype=np.int64)
    fpar, up_pol, up_sel, down_pol, down_sel = _kernel_params(limits)
    kernel(
        p, c, float(now_s), slot, fpar, up_pol, up_sel, down_pol, down_sel, state.times_s,
        state.proposals, state.added, state.removed, state.initial, state.initial_time_s,
        state.armed, w, out, reasons,
    )  # fmt: skip
    return out, reasons


def reason_names(bits: int) -> list[str]:
    return [name for name in REASONS if bits & _BIT[name]]


@dataclass(frozen=True, slots=True)
class Clamped:
    replicas: int
    reasons: tuple[str, ...]


def clamp(
    proposed: int,
    current: int,
    now_s: float,
    limits: SafetyLimits,
    state: ClampState,
    *,
    warm: int = 0,
) -> Clamped:
    """One target's clamp (the controller's path): `clamp_batch` with B=1."""
    out, bits = clamp_batch(
        np.array([proposed], dtype=np.float64),
        np.array([current], dtype=np.float64),
        now_s,
        limits,
        state,
        warm=np.array([warm], dtype=np.float64),
    )
    return Clamped(int(out[0]), tuple(reason_names(int(bits[0]))))


def clamp_warm(proposed_warm: np.ndarray, limits: SafetyLimits) -> np.ndarray:
    """Warm-pool size within [0, max_warm_replicas]."""
    return np.clip(np.rint(proposed_warm), 0, limits.max_warm_replicas).astype(np.int64)
