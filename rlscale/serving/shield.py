"""The run-time shield: a conservative rule that bounds a policy's proposal from below, batched
over B clusters, pure numpy. The same code runs in the simulator's clamp path
(`rlscale.envs.fleet.ClampedFleet`, so training and the evaluator's rollouts see it) and in the
live controller (`rlscale.deploy.decide`).

It lives in `serving` because the env must apply it (envs may not import policies) and its rules
read the serving model's capacity at the observed request mix (`serving.capacity`).

Per interval, on the metrics row that just ended (B, N_FIELDS) and the current target (B,):

    demand    arrival rate + queue drained over `drain_s` (`contract.demand_rps`)
    capacity  requests/s per replica that a fleet of n serves within the SLO at the observed
              mean prompt and output tokens (prompt_tokens_per_s / arrival_rps, ...):
              `slo_capacity_rps(..., replicas=n)`. This is what makes the shield token-aware
              where a checkpoint's fixed `replica_capacity_rps` is not: at 10x prompts one 8B
              replica serves 1.2 req/s within a 2 s TTFT, not 22.6. It grows with n (more slots
              pool the bursts of long prefills: 1.17 req/s each for 1 replica, 1.82 for 4, 2.24
              for 13), so every count below is the smallest n whose fleet carries the demand,
              n x capacity(n) x utilisation >= demand, not demand over one replica's capacity
              (which sized a 13-replica fleet that held 99.2 % at 19-20: 681 $ against 481 $).

    handover  the SLO (p95 TTFT or TPOT over its limit; with a per-length SLO class the TTFT
              limit is the class's target at the observed mean prompt, all a histogram that is
              not split by prompt length can be held to) breached for `breach_intervals`
              intervals in a row while the policy held or shrank: the rule decides
              (the count that carries demand at handover_utilisation; the policy may add more) until
              `recover_intervals` intervals in a row meet the SLO (hysteresis).
    floor     on scale-up (the rule's count above the current target), at least the count that
              carries demand at floor_utilisation: the policy may add more, never fewer.
    queue     no scale-down while `queue_per_replica` requests or more wait per ready replica.
    consolidation  before a scale-down to N' of N, the survivors must carry the load at
              N / N' times the per-replica load: the most demand of the last `lookback_s`
              within N' x capacity(N') x consolidation_utilisation; else the scale-down
              stops at the smallest count that passes (never above N). `lookback_s: null`
              sets the lookback to the profile's mean cold start (a replica given away takes
              that long to come back; fit it to the cluster's pods with `rlscale profiles
              cold-start`). Measured on the held-out cells it cost 0-4 % more (up to 14 % with
              cold starts x2 on 70B) for fewer scale events on 70B and did not lift the one
              cell it was meant for (70B Azure conv, cold starts x2: 94.96 % against 95.69 %
              with 60 s), so 60 s stays the default.

floor_utilisation > consolidation_utilisation leaves a band where the shield neither adds nor
removes, so the shield itself cannot oscillate. Unobserved arrivals (NaN) set no floor and pass
no consolidation check: missing data never scales down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlscale.contract import DEFAULT_SLO_TARGET, FIELD_INDEX, replicas_for_utilisation
from rlscale.profiles.model import ServiceProfile
from rlscale.serving.capacity import slo_capacity_rps

_F = FIELD_INDEX

# Firing kinds, one per interval and cluster (the last in this order that changed the count);
# code 0 is "did not fire". The names are the `Decision`/controller reasons and the evaluation columns.
NONE, HANDOVER, FLOOR, QUEUE, CONSOLIDATION = 0, 1, 2, 3, 4
FIRING_REASONS: tuple[str, ...] = (
    "",
    "ShieldHandover",
    "ShieldFloor",
    "ShieldQueue",
    "ShieldConsolidation",
)
# evaluation column per kind (counts of intervals it fired in)
FIRING_COLUMNS: tuple[str, ...] = (
    "shield_handover",
    "shield_floor",
    "shield_queue",
    "shield_consolidation",
)

# Request sizes are bucketed on a 2 % log grid (rounded up: the larger request, the lower
# capacity) so the capacity lookup is cached across intervals.
_SIZE_STEP = math.log(1.02)
# Fleet sizes the per-replica SLO capacity is computed at, linear in log2(n) between them and
# flat beyond the last (where pooling has done nearly all it can: 2.30 req/s at 20 against 2.24
# at 13 in the example above); counts are searched up to _MAX_COUNT.
_FLEET_GRID = (1, 2, 4, 8, 16, 32, 64)
_MAX_COUNT = 512
# the longest consolidation lookback: an hour (beyond it the peak is the day's, not the burst's)
_MAX_LOOKBACK_S = 3600.0


class ShieldConfig(BaseModel):
    """The shield's parameters (every one an option in the controller's and the env's config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The defaults are the ones the shipped results were measured with. Two alternatives were
    # measured on the held-out cells and not adopted (`benchmarks/shield_calibration.py`):
    # looser utilisations (0.9 / 0.85; `benchmarks/results/shield_v5_loose/`) and the cold-start
    # lookback (`lookback_s: null`; `benchmarks/results/shield_coldstart_lookback/`).
    # floor on scale-up: demand / (SLO capacity at the mix x this); 0.85 leaves one interval of
    # growth and the metrics' lag as headroom over a capacity that already holds the SLO
    floor_utilisation: float = Field(default=0.85, gt=0, le=1)
    # the survivors of a scale-down must carry the recent peak demand at this utilisation
    consolidation_utilisation: float = Field(default=0.75, gt=0, le=1)
    # seconds of demand the consolidation check takes the max of; None: the profile's mean cold
    # start (the time a replica given away takes to come back: 132 s on 8B, 324 s on 70B)
    lookback_s: float | None = Field(default=60.0, gt=0, le=_MAX_LOOKBACK_S)
    # queue counted as demand drained over this (shorter than the action map's 60 s: a floor
    # should clear a queue within a cold start, not a minute after it)
    drain_s: float = Field(default=30.0, gt=0)
    queue_per_replica: float = Field(default=1.0, gt=0)  # waiting per ready replica: no scale-down
    breach_intervals: int = Field(default=2, ge=1)  # K breached intervals -> hand-over
    recover_intervals: int = Field(default=8, ge=1)  # intervals within the SLO -> hand back
    handover_utilisation: float = Field(default=0.7, gt=0, le=1)
    slo_target: float = Field(default=DEFAULT_SLO_TARGET, gt=0, lt=1)  # capacity is sized for it
    prompt_cv: float = Field(default=1.0, ge=0)  # prompt-size CV the capacity assumes

    @model_validator(mode="after")
    def _band(self) -> ShieldConfig:
        if self.consolidation_utilisation > self.floor_utilisation:
            raise ValueError(
                f"consolidation_utilisation {self.consolidation_utilisation:g} must be <= "
                f"floor_utilisation {self.floor_utilisation:g} (else the shield oscillates)"
            )
        return self


@dataclass(frozen=True)
class ShieldResult:
    target: np.ndarray  # (B,) replicas after the shield
    fired: np.ndarray  # (B,) int firing code (0: none); FIRING_REASONS[code]
    floor: np.ndarray  # (B,) the floor's count this interval
    capacity_rps: np.ndarray  # (B,) per-replica SLO capacity at the observed mix, floor's fleet
    handover: np.ndarray  # (B,) bool: the rule is deciding


class Shield:
    """B clusters' shield state (hand-over, breach and recovery runs, recent demand)."""

    def __init__(
        self,
        config: ShieldConfig,
        profile: ServiceProfile,
        batch: int,
        *,
        interval_s: float,
        ttft_slo_s: float,
        tpot_slo_s: float,
        ttft_slo_s_per_1k_tokens: float = 0.0,
    ) -> None:
        self.config = config
        self.profile = profile
        self.batch = batch
        self.ttft_slo_s = float(ttft_slo_s)
        self.tpot_slo_s = float(tpot_slo_s)
        self.ttft_slo_s_per_1k_tokens = float(ttft_slo_s_per_1k_tokens)
        self.handover = np.zeros(batch, dtype=bool)
        self.breach_run = np.zeros(batch, dtype=np.int64)
        self.ok_run = np.zeros(batch, dtype=np.int64)
        self.lookback_s = (
            profile.mean_cold_start_s if config.lookback_s is None else config.lookback_s
        )
        # intervals of demand the consolidation check takes the max of (at least the last one)
        lookback = max(1, math.ceil(min(self.lookback_s, _MAX_LOOKBACK_S) / interval_s - 1e-9))
        self.demand = np.full((batch, lookback), np.nan)
        self.firings = np.zeros((batch, len(FIRING_REASONS)), dtype=np.int64)

    def reset(self, mask: np.ndarray | None = None) -> None:
        m = slice(None) if mask is None else np.asarray(mask, dtype=bool)
        self.handover[m] = False
        self.breach_run[m] = 0
        self.ok_run[m] = 0
        self.demand[m] = np.nan
        self.firings[m] = 0

    def capacity_rps(self, rows: np.ndarray) -> np.ndarray:
        """Per-replica SLO capacity (B, len(_FLEET_GRID)) of a fleet of each grid size, at each
        row's mean request size (the profile's typical size where the token rates or the arrival
        rate are unobserved or zero)."""
        arr = rows[:, _F["arrival_rps"]]
        ok = np.isfinite(arr) & (arr > 1e-9)
        safe = np.where(ok, arr, 1.0)
        isl = _sizes(
            rows[:, _F["prompt_tokens_per_s"]] / safe, ok, self.profile.typical_prompt_tokens
        )
        osl = _sizes(
            rows[:, _F["output_tokens_per_s"]] / safe, ok, self.profile.typical_output_tokens
        )
        keys = np.stack([isl, osl], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        c = self.config
        caps = np.array(
            [
                [
                    slo_capacity_rps(
                        self.profile,
                        float(i),
                        float(o),
                        replicas=n,
                        slo_target=c.slo_target,
                        prompt_cv=c.prompt_cv,
                        ttft_slo_s=self.ttft_slo_s,
                        tpot_slo_s=self.tpot_slo_s,
                        ttft_slo_s_per_1k_tokens=self.ttft_slo_s_per_1k_tokens,
                    )
                    for n in _FLEET_GRID
                ]
                for i, o in uniq
            ]
        )
        # a mix no replica can serve within the SLO sizes as a tiny capacity, not a division by 0
        return np.maximum(caps[np.ravel(inv)], 1e-3)

    def ttft_limit_s(self, rows: np.ndarray) -> np.ndarray | float:
        """The TTFT p95 limit per row: the SLO class's target at the row's mean prompt (prompt
        tokens / requests over the interval; the profile's typical prompt where unobserved).
        Exactly `ttft_slo_s` for a flat class."""
        if self.ttft_slo_s_per_1k_tokens == 0.0:
            return self.ttft_slo_s
        arr = rows[:, _F["arrival_rps"]]
        ok = np.isfinite(arr) & (arr > 1e-9)
        tok = rows[:, _F["prompt_tokens_per_s"]] / np.where(ok, arr, 1.0)
        isl = np.where(ok & np.isfinite(tok), tok, float(self.profile.typical_prompt_tokens))
        return self.ttft_slo_s + self.ttft_slo_s_per_1k_tokens * isl / 1000.0

    def apply(self, proposed: np.ndarray, current: np.ndarray, rows: np.ndarray) -> ShieldResult:
        """Bound the proposals (B,) given the current targets (B,) and the metrics rows (B,
        N_FIELDS) of the interval that just ended; advances the hand-over state."""
        c = self.config
        prop = np.asarray(proposed, dtype=np.float64)
        cur = np.asarray(current, dtype=np.float64)
        arr = rows[:, _F["arrival_rps"]]
        seen = np.isfinite(arr)
        waiting = np.nan_to_num(rows[:, _F["requests_waiting"]])
        demand = np.where(seen, np.nan_to_num(arr) + waiting / c.drain_s, np.nan)
        curve = self.capacity_rps(rows)
        d0 = np.nan_to_num(demand)
        floor, cap = fleet_for(d0, curve, c.floor_utilisation)
        rule, _ = fleet_for(d0, curve, c.handover_utilisation)
        self.demand[:, :-1] = self.demand[:, 1:]
        self.demand[:, -1] = demand
        peak = np.nanmax(np.where(np.isnan(self.demand), -np.inf, self.demand), axis=1)

        # hand-over: K breached intervals in a row while the policy held or shrank
        breach = (rows[:, _F["ttft_p95_s"]] > self.ttft_limit_s(rows)) | (
            rows[:, _F["tpot_p95_s"]] > self.tpot_slo_s
        )
        self.breach_run = np.where(breach & (prop <= cur), self.breach_run + 1, 0)
        self.ok_run = np.where(breach, 0, self.ok_run + 1)
        enter = ~self.handover & (self.breach_run >= c.breach_intervals)
        leave = self.handover & (self.ok_run >= c.recover_intervals)
        self.handover = (self.handover | enter) & ~leave

        out = prop.copy()
        fired = np.zeros(self.batch, dtype=np.int64)
        # the rule decides; the policy may add more; no scale-down while the SLO is breached
        ho = self.handover & seen
        ho_target = np.maximum(np.maximum(rule, prop), np.where(breach, cur, 0.0))
        fired[ho & (ho_target != prop)] = HANDOVER
        out = np.where(ho, ho_target, out)
        free = ~ho
        up = free & seen & (floor > cur) & (out < floor)
        fired[up] = FLOOR
        out = np.where(up, floor, out)
        ready = np.maximum(np.nan_to_num(rows[:, _F["replicas_ready"]]), 1.0)
        queued = (out < cur) & (waiting >= c.queue_per_replica * ready)
        fired[queued] = QUEUE
        out = np.where(queued, cur, out)
        # consolidation: survivors carry the recent peak; unobserved demand passes no check
        carried, _ = fleet_for(
            np.maximum(np.nan_to_num(peak), 0.0), curve, c.consolidation_utilisation
        )
        need = np.where(np.isfinite(peak), carried, np.inf)
        short = (out < cur) & (out < need)
        fired[short] = CONSOLIDATION
        out = np.where(short, np.minimum(cur, need), out)
        np.add.at(self.firings, (np.arange(self.batch), fired), 1)
        return ShieldResult(out, fired, floor, cap, self.handover.copy())

    def counts(self) -> list[dict[str, int]]:
        """Firings per cluster since the last reset, by evaluation column."""
        return [
            {col: int(self.firings[b, k + 1]) for k, col in enumerate(FIRING_COLUMNS)}
            for b in range(self.batch)
        ]


_COUNTS = np.arange(1, _MAX_COUNT + 1, dtype=np.float64)
# where each count falls on the grid: capacity(n) = curve[j] x (1 - w) + curve[j + 1] x w
_LOG_GRID = np.log2(np.asarray(_FLEET_GRID, dtype=np.float64))
_POS = np.clip(np.log2(_COUNTS), _LOG_GRID[0], _LOG_GRID[-1])
_J = np.clip(np.searchsorted(_LOG_GRID, _POS, side="right") - 1, 0, len(_FLEET_GRID) - 2)
_W = (_POS - _LOG_GRID[_J]) / (_LOG_GRID[_J + 1] - _LOG_GRID[_J])


def fleet_for(
    demand_rps: np.ndarray, curve: np.ndarray, utilisation: float
) -> tuple[np.ndarray, np.ndarray]:
    """The smallest fleet n (B,) with n x capacity(n) x utilisation >= demand_rps (B,), where
    capacity(n) is `curve` (B, len(_FLEET_GRID)) read at n; and capacity(n) (B,) itself. 0 for
    no demand; beyond _MAX_COUNT, demand over the last capacity (the fleet no bound allows)."""
    d = np.asarray(demand_rps, dtype=np.float64)
    cap_n = curve[:, _J] * (1.0 - _W) + curve[:, _J + 1] * _W  # (B, _MAX_COUNT)
    ok = _COUNTS * cap_n * utilisation >= d[:, None] * (1.0 - 1e-9)
    first = np.argmax(ok, axis=1)
    found = ok[np.arange(len(d)), first]
    n = np.where(found, first + 1.0, replicas_for_utilisation(d, 1.0, curve[:, -1] * utilisation))
    n = np.where(d > 0, n, 0.0)
    cap = np.where(found, cap_n[np.arange(len(d)), first], curve[:, -1])
    return n, np.where(d > 0, cap, curve[:, 0])


def _sizes(tokens: np.ndarray, ok: np.ndarray, typical: float) -> np.ndarray:
    t = np.where(ok & np.isfinite(tokens) & (tokens >= 1.0), tokens, float(typical))
    return np.exp(np.ceil(np.log(np.maximum(t, 1.0)) / _SIZE_STEP) * _SIZE_STEP)


def default_shield(kind: str) -> ShieldConfig | None:
    """The default for a policy kind: on for learned policies (`ppo`), off for the rules (the HPA
    baseline must stay the real HPA)."""
    return ShieldConfig() if kind == "ppo" else None
