"""The simulation core: B independent GPU clusters serving a workload, stepped in lockstep in numpy
(no gymnasium here, so the evaluator, the oracle and the sandbox use it directly).

Replica lifecycle, per cluster:

    starting --(cold start, sampled per replica)--> ready --(scale down)--> draining --> gone
    warm-loading --(fill)--> warm (standby) --(scale up, wake time)--> ready

What a standby member is, and so its fill and wake times, is `config.standby_tier`
(`profiles.standby`): a sleeping replica (fill = a cold start, wake = the profile's `warm_wake`),
a warm node (fill = a new node; wake = the cold start without the node stage) or a preloaded
node (wake = without node and pull stages, weights from local disk).

Every replica that holds GPUs is paid: starting, ready, draining, warm-loading, warm, waking.

One `step(target_replicas, target_warm)` is one control interval of `interval_s`:

1. the targets are applied at the interval's start: a scale-up takes warm replicas first (they
   wake in seconds), then cold-starts new ones; a scale-down cancels replicas still starting,
   newest first (as a ReplicaSet deletes not-ready pods first), then drains ready ones;
2. the interval is served (`serving.serve_interval`) by the ready replicas, plus the fraction of
   the interval that replicas finishing their start inside it are up;
3. pipelines advance, cost accrues, and the interval's `IntervalMetrics` row is written to
   `self.metrics` (B, N_FIELDS) in `contract.FIELDS` order.

Pipelines are ring buffers (B, H) indexed from a shared head, so advancing is O(B).
Randomness only from the generator seeded in `reset`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rlscale.contract import FIELD_INDEX, N_FIELDS
from rlscale.envs import cluster_kernel as kern
from rlscale.profiles.model import ServiceProfile
from rlscale.profiles.standby import standby
from rlscale.serving import serve_kernel
from rlscale.serving.model import LatencyArrays, ServeResult, SimConfig, grid_index, serve_interval
from rlscale.traces.workload import Workload

_F = FIELD_INDEX
# the p50 / p95 / p99 columns of the metrics rows and of the serving model's quantile grid
_TTFT_COLS = [_F["ttft_p50_s"], _F["ttft_p95_s"], _F["ttft_p99_s"]]
_TPOT_COLS = [_F["tpot_p50_s"], _F["tpot_p95_s"], _F["tpot_p99_s"]]
_PCT_GRID = [grid_index(0.5), grid_index(0.95), grid_index(0.99)]
_POOL = 8192  # pre-sampled cold-start and wake durations per reset
_NO_DRAWS = np.zeros(0, dtype=np.int64)
_NO_WARM = np.zeros(0)
Engine = Literal["numba", "numpy"]


@dataclass
class Totals:
    """Running totals per cluster since reset (B,)."""

    arrived: np.ndarray
    completed: np.ndarray
    dropped: np.ndarray
    slo_ok: np.ndarray
    cost_usd: np.ndarray
    gpu_hours: np.ndarray
    cold_starts: np.ndarray
    scale_events: np.ndarray
    replica_intervals: np.ndarray  # sum of ready replicas over intervals, for the mean

    @classmethod
    def zeros(cls, batch: int) -> Totals:
        return cls(**{k: np.zeros(batch) for k in cls.__dataclass_fields__})

    @classmethod
    def packed(cls, batch: int) -> tuple[Totals, np.ndarray]:
        """Totals whose fields are the rows of one (9, B) matrix (the kernel's `tot`)."""
        mat = np.zeros((len(cls.__dataclass_fields__), batch))
        return cls(*mat), mat


@dataclass
class _Ring:
    """Counts of replicas per future interval, plus the part of their arrival interval they serve."""

    count: np.ndarray  # (B, H)
    partial: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.partial.shape != self.count.shape:
            self.partial = np.zeros_like(self.count)

    def total(self) -> np.ndarray:
        return self.count.sum(axis=1)


class ClusterSim:
    """B clusters of one `ServiceProfile` replaying workloads.

    `workloads` are re-binned to `config.interval_s`. `reset` picks, per cluster, a workload and
    a window of it; `step` advances every cluster one interval. Clusters whose window has ended
    keep `done[b] = True` and should be reset (the vectorised env does it automatically).

    `engine="numba"` (the default) steps through `envs.cluster_kernel`, a scalar transcription
    of the numpy methods below; `engine="numpy"` steps through those methods, the reference the
    kernel is held to (tests/envs/test_cluster_kernel.py). Both draw the same random numbers.
    """

    def __init__(
        self,
        profile: ServiceProfile,
        workloads: Sequence[Workload],
        batch: int = 1,
        config: SimConfig | None = None,
        seed: int | None = None,
        engine: Engine = "numba",
    ) -> None:
        if not workloads:
            raise ValueError("ClusterSim needs at least one workload")
        if engine not in ("numba", "numpy"):
            raise ValueError(f"engine = {engine!r}, must be 'numba' or 'numpy'")
        self.engine = engine
        self.profile = profile
        self.config = config or SimConfig()
        self.batch = batch
        dt = self.config.interval_s
        binned = [w.rebin(dt) for w in workloads]
        self.workloads = binned
        t_max = max(w.n_bins for w in binned)
        # arrivals, prompt and output tokens per bin as one (3, W, T) table for the kernel
        self._tables = np.ones((3, len(binned), t_max))
        self._arrivals, self._prompt, self._output = self._tables
        self._arrivals[:] = 0.0
        for i, w in enumerate(binned):
            self._arrivals[i, : w.n_bins] = w.arrivals
            self._prompt[i, : w.n_bins] = np.maximum(w.prompt_tokens, 1.0)
            self._output[i, : w.n_bins] = np.maximum(w.output_tokens, 1.0)
        self._lengths = np.array([w.n_bins for w in binned], dtype=np.int64)
        self._per_workload = np.array(
            [
                [w.start_s for w in binned],
                [w.prompt_tokens_cv for w in binned],
                [w.output_tokens_cv for w in binned],
            ],
            dtype=np.float64,
        )
        self._start_s, self._prompt_cv, self._output_cv = self._per_workload

        max_cold = sum(s.high_s for s in profile.cold_start) * math.exp(
            3 * self.config.cold_start_jitter
        )
        self._h_start = int(math.ceil(max_cold / dt)) + 2
        # what a pool member is: its fill and wake durations (the sleeping tier: the profile's)
        self.standby = standby(profile, self.config.standby_tier)
        max_wake = self.standby.max_wake_s * math.exp(3 * self.config.cold_start_jitter)
        self._h_wake = int(math.ceil(max_wake / dt)) + 2
        # Draining replicas finish their in-flight requests: about one request's service time.
        svc_s = (
            profile.ttft_ms(profile.max_concurrency() / 2, profile.typical_prompt_tokens) / 1000.0
        )
        svc_s += (
            profile.typical_output_tokens
            * float(profile.tpot_ms(profile.max_concurrency() / 2, profile.typical_prompt_tokens))
            / 1000.0
        )
        self._drain_bins = max(1, int(math.ceil(svc_s / dt)))
        self._usd_per_replica_interval = profile.replica_usd_per_hour * dt / 3600.0
        self._gpus = profile.gpus_per_replica
        cfg = self.config
        self._params = np.array(
            [
                dt,
                cfg.arrival_scv,
                cfg.timeout_s,
                cfg.ttft_slo_s,
                cfg.tpot_slo_s,
                self._usd_per_replica_interval,
                float(self._gpus),
                cfg.ttft_slo_s_per_1k_tokens,
            ]
        )
        self._last: ServeResult | None = None
        self._last_buffers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.rng = np.random.default_rng(seed)
        self.reset(seed=seed)

    # ------------------------------------------------------------------------------------
    def reset(
        self,
        *,
        seed: int | None = None,
        mask: np.ndarray | None = None,
        workload_index: np.ndarray | int | None = None,
        start_bin: np.ndarray | int | None = None,
        episode_bins: int | None = None,
        initial_replicas: np.ndarray | int | None = None,
    ) -> None:
        """Reset all clusters, or those in `mask`. Defaults: workload b % n, from bin 0 to its end,
        starting with the replicas the first bins need at the profile's capacity."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if mask is None:
            self._allocate()
        m = np.ones(self.batch, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        n = int(m.sum())
        if n == 0:
            return
        idx = np.nonzero(m)[0]
        wid = (
            idx % len(self.workloads)
            if workload_index is None
            else self._per_row(workload_index, idx, int)
        )
        self.wid[idx] = wid
        start = self._per_row(0 if start_bin is None else start_bin, idx, int)
        self.t[idx] = start
        length = self._lengths[wid]
        self.t_end[idx] = (
            length if episode_bins is None else np.minimum(start + episode_bins, length)
        )
        self._empty_rows(idx)
        first_rate_rps = self._arrivals[wid, np.minimum(start, length - 1)] / self.config.interval_s
        if initial_replicas is None:
            cap = np.array([self.profile.capacity_rps()] * n)
            init = np.maximum(np.ceil(first_rate_rps / (0.7 * cap)), 1.0)
        else:
            init = self._per_row(np.asarray(initial_replicas, dtype=np.float64), idx, float)
        self.ready[idx] = init
        for name in Totals.__dataclass_fields__:
            getattr(self.totals, name)[idx] = 0
        self.done[idx] = False
        self.lat_reset(idx)
        # the metrics row before the first step: what the first policy call sees
        self.metrics[idx] = 0
        self.metrics[idx, _F["interval_s"]] = self.config.interval_s
        self.metrics[idx, _F["time_s"]] = self._start_s[wid] + start * self.config.interval_s
        self.metrics[idx, _F["arrival_rps"]] = first_rate_rps
        self.metrics[idx, _F["replicas_ready"]] = init
        self.metrics[idx, _F["replicas_desired"]] = init

    def _per_row(
        self, value: np.ndarray | int | float, idx: np.ndarray, scalar: type[int] | type[float]
    ) -> np.ndarray:
        """`value[idx]` of a per-cluster (B,) value, or a scalar repeated for the rows in idx."""
        if np.ndim(value):
            return np.broadcast_to(np.asarray(value), (self.batch,))[idx]
        return np.full(len(idx), scalar(value))

    def _allocate(self) -> None:
        """Fresh state for every cluster, and fresh cold-start and wake pools from self.rng."""
        b, dt = self.batch, self.config.interval_s
        self.t_head = 0
        # Per-cluster state lives in a few packed arrays (what the kernel takes); the attributes
        # are views of their rows, written in place by both engines.
        self._rows = np.zeros((kern.N_ROWS, b))
        self.ready = self._rows[kern.READY]
        self.warm = self._rows[kern.WARM]
        self.queue = self._rows[kern.QUEUE]
        self.running = self._rows[kern.RUNNING]
        # mean sizes of the requests in flight: the batch is priced at its own mix
        self.running_prompt = self._rows[kern.RUN_PROMPT]
        self.running_output = self._rows[kern.RUN_OUTPUT]
        self.cold_scale = self._rows[kern.COLD_SCALE]
        self.running_prompt[:] = self.running_output[:] = self.cold_scale[:] = 1.0
        self._rings = np.zeros((4, b, self._h_start))
        self._wake = np.zeros((2, b, self._h_wake))
        self.starting = _Ring(self._rings[0], self._rings[1])
        self.warm_loading = _Ring(self._rings[2], self._rings[3])
        self.waking = _Ring(self._wake[0], self._wake[1])
        self.draining = np.zeros((b, self._drain_bins + 1))
        self._ints = np.zeros((3, b), dtype=np.int64)
        self.wid, self.t, self.t_end = self._ints
        self.totals, self._tot = Totals.packed(b)
        # column-major: each interval writes whole columns (one field for every cluster)
        self.metrics = np.zeros((b, N_FIELDS), order="F")
        self.metrics[:, _F["interval_s"]] = dt
        base = LatencyArrays.from_profile(self.profile, b)
        self._lat = np.stack([getattr(base, f) for f in serve_kernel.LAT_FIELDS])
        self.lat = LatencyArrays(*self._lat)
        self._counts = np.zeros((3, b))
        self.done = np.zeros(b, dtype=bool)
        self._cold_pool = self.profile.sample_cold_start_s(self.rng, _POOL)
        self._wake_pool = self.standby.sample_wake_s(self.rng, _POOL)
        # the sleeping tier fills with a cold start: the same pool, and no extra draws
        self._fill_pool = (
            self._cold_pool
            if self.standby.fill is None
            else self.standby.sample_fill_s(self.rng, _POOL)
        )
        # One table for the kernel's cold starts (first half) and pool fills (second half), so
        # its signature is the same for every tier: the fill draws are offset by _POOL.
        self._cold_fill_pool = np.concatenate([self._cold_pool, self._fill_pool])

    def _empty_rows(self, idx: np.ndarray) -> None:
        """No replica starting, waking, loading, draining or warm; no request queued or running."""
        for ring in (self.starting, self.warm_loading, self.waking):
            ring.count[idx] = 0
            ring.partial[idx] = 0
        self.draining[idx] = 0
        self.warm[idx] = 0
        self.queue[idx] = 0
        self.running[idx] = 0
        t = np.minimum(self.t[idx], self._lengths[self.wid[idx]] - 1)
        self.running_prompt[idx] = self._prompt[self.wid[idx], t]
        self.running_output[idx] = self._output[self.wid[idx], t]

    def lat_reset(self, idx: np.ndarray) -> None:
        base = LatencyArrays.from_profile(self.profile, len(idx))
        if self.config.latency_jitter > 0:
            base.jitter(self.rng, self.config.latency_jitter)
        for name in base.__dataclass_fields__:
            getattr(self.lat, name)[idx] = getattr(base, name)
        if self.config.cold_start_jitter > 0:
            self.cold_scale[idx] = np.exp(
                self.rng.normal(0.0, self.config.cold_start_jitter, len(idx))
            )
        else:
            self.cold_scale[idx] = 1.0

    # ------------------------------------------------------------------------------------
    def provisioned(self) -> np.ndarray:
        """Replicas counted toward the target: ready, starting and waking."""
        return self.ready + self.starting.total() + self.waking.total()

    def _admit(self, ring: _Ring, counts: np.ndarray, pool: np.ndarray) -> None:
        """Add `counts[b]` replicas to `ring` with durations drawn from `pool`."""
        who = np.repeat(np.arange(self.batch), counts.astype(np.int64))
        if who.size == 0:
            return
        dur = pool[self.rng.integers(0, _POOL, who.size)] * self.cold_scale[who]
        pos = dur / self.config.interval_s
        h = ring.count.shape[1]
        bins = np.minimum(pos.astype(np.int64), h - 2)
        served = 1.0 - np.minimum(pos - bins, 1.0)
        flat = who * h + (self.t_head + bins) % h
        size = ring.count.size
        # bincount beats np.add.at by ~10x on thousands of scattered increments
        ring.count += np.bincount(flat, minlength=size).reshape(ring.count.shape)
        ring.partial += np.bincount(flat, weights=served, minlength=size).reshape(ring.count.shape)

    def _cancel_newest(self, ring: _Ring, counts: np.ndarray) -> np.ndarray:
        """Remove up to `counts[b]` replicas from `ring`, latest-ready first; returns removed."""
        removed = np.zeros(self.batch)
        rows = np.nonzero(counts > 0)[0]
        if rows.size == 0:
            return removed
        h = ring.count.shape[1]
        order = (self.t_head + np.arange(h - 1, -1, -1)) % h  # newest (furthest) first
        sub = ring.count[rows]
        # only the bins that hold a replica in some of these rows take part (a ring is mostly
        # empty: ~10 of its ~60 bins are in use)
        cols = order[np.asarray(sub.any(axis=0))[order]]
        if cols.size == 0:
            return removed
        c = sub[:, cols]
        before = np.cumsum(c, axis=1) - c
        take = np.clip(counts[rows, None] - before, 0.0, c)
        # partial service is proportional to the replicas left in each bin
        keep = np.where(c > 0, 1.0 - take / np.maximum(c, 1e-12), 0.0)
        grid = np.ix_(rows, cols)
        ring.count[grid] = c - take
        ring.partial[grid] *= keep
        removed[rows] = take.sum(axis=1)
        return removed

    @property
    def last(self) -> ServeResult:
        """The last interval's serving result (per cluster)."""
        if self._last is None and self._last_buffers is not None:
            self._last = serve_kernel.result_of(*self._last_buffers)
        if self._last is None:
            raise AttributeError("ClusterSim.last: no interval has been served yet")
        return self._last

    @last.setter
    def last(self, value: ServeResult) -> None:
        self._last = value

    def step(
        self, target_replicas: np.ndarray, target_warm: np.ndarray | None = None
    ) -> np.ndarray:
        """Advance one interval toward the (already clamped) targets; returns the metrics rows."""
        if self.engine == "numba":
            return self._step_kernel(target_replicas, target_warm)
        target = np.asarray(target_replicas, dtype=np.float64)
        self._scale_toward(target)
        if target_warm is not None:
            self._resize_warm_pool(np.asarray(target_warm, dtype=np.float64))
        n_starting, n_waking = self.starting.total(), self.waking.total()
        n_draining = self.draining.sum(axis=1)
        paid = (
            self.ready + self.warm + n_draining + n_starting + self.warm_loading.total() + n_waking
        )
        head = self.t_head % self.starting.count.shape[1]
        whead = self.t_head % self.waking.count.shape[1]
        # replicas whose start ends inside this interval serve the part of it after they are up
        ready_eff = self.ready + self.starting.partial[:, head] + self.waking.partial[:, whead]
        arrivals, prompt, output, r = self._serve(ready_eff)
        # what is still starting (or waking) and draining once the pipelines advance
        still_starting = n_starting - self.starting.count[:, head] + n_waking
        still_starting -= self.waking.count[:, whead]
        still_draining = n_draining - self.draining[:, 0]
        self._advance_pipelines(head, whead)
        self._account(arrivals, r, paid, ready_eff)
        self._write_metrics(target, arrivals, prompt, output, r, still_starting, still_draining)
        self.last = r
        self.last_arrivals = arrivals
        self.last_paid = paid
        self.t += 1
        self.done[:] = self.t >= self.t_end
        return self.metrics

    def _step_kernel(
        self, target_replicas: np.ndarray, target_warm: np.ndarray | None
    ) -> np.ndarray:
        """`step` through `envs.cluster_kernel`: plan, the draws (as `_admit` makes them), advance."""
        b = self.batch
        target = np.ascontiguousarray(target_replicas, dtype=np.float64).reshape(b)
        use_warm = target_warm is not None
        warm = (
            np.ascontiguousarray(target_warm, dtype=np.float64).reshape(b) if use_warm else _NO_WARM
        )
        counts = self._counts
        n_wake, n_cold, n_grow = kern.plan(
            target, warm, use_warm, self._rows, self._rings, self._wake, self.draining,
            self._tot, self.t_head, counts,
        )  # fmt: skip
        rng = self.rng
        draws_wake = rng.integers(0, _POOL, n_wake) if n_wake else _NO_DRAWS
        draws_cold = rng.integers(0, _POOL, n_cold) if n_cold else _NO_DRAWS
        draws_grow = rng.integers(0, _POOL, n_grow) + _POOL if n_grow else _NO_DRAWS
        out = np.empty((serve_kernel.N_OUT, b))
        ttft_q = np.empty((b, serve_kernel.N_P))
        tpot_q = np.empty((b, serve_kernel.N_P))
        step_out = np.empty((3, b))
        kern.advance(
            target, counts, draws_wake, draws_cold, draws_grow, self._wake_pool,
            self._cold_fill_pool, self._rows, self._rings, self._wake, self.draining, self._tot, self._lat,
            self.metrics, self._ints, self.done, self._tables, self._per_workload, self._lengths,
            self._params, self.t_head, out, ttft_q, tpot_q, step_out,
        )  # fmt: skip
        self.t_head += 1
        self._last, self._last_buffers = None, (out, ttft_q, tpot_q)
        self.last_arrivals = step_out[kern.S_ARRIVALS]
        self.last_paid = step_out[kern.S_PAID]
        return self.metrics

    def _scale_toward(self, target: np.ndarray) -> None:
        """Up: wake warm replicas first, cold-start the rest. Down: cancel the newest starts,
        then the newest wakes, then drain ready replicas."""
        delta = target - self.provisioned()
        up = np.maximum(delta, 0.0)
        if up.any():
            from_warm = np.minimum(up, self.warm)
            self.warm -= from_warm
            self._admit(self.waking, from_warm, self._wake_pool)
            cold = up - from_warm
            self._admit(self.starting, cold, self._cold_pool)
            self.totals.cold_starts += cold
        down = np.maximum(-delta, 0.0)
        if down.any():
            left = down - self._cancel_newest(self.starting, down)
            left -= self._cancel_newest(self.waking, left)
            to_drain = np.minimum(left, self.ready)
            self.ready -= to_drain
            self.draining[:, -1] += to_drain
        self.totals.scale_events += delta != 0

    def _resize_warm_pool(self, target_warm: np.ndarray) -> None:
        """Grow by cold-starting into the pool; shrink by cancelling loads, then dropping warm."""
        wdelta = target_warm - (self.warm + self.warm_loading.total())
        grow = np.maximum(wdelta, 0.0)
        if grow.any():
            self._admit(self.warm_loading, grow, self._fill_pool)
            self.totals.cold_starts += grow
        shrink = np.maximum(-wdelta, 0.0)
        if shrink.any():
            left = shrink - self._cancel_newest(self.warm_loading, shrink)
            self.warm -= np.minimum(left, self.warm)

    def _serve(
        self, ready_eff: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, ServeResult]:
        """This interval's load (none once a cluster's window has ended) through the serving model."""
        wid, t = self.wid, np.minimum(self.t, self._lengths[self.wid] - 1)
        arrivals = np.where(self.done, 0.0, self._arrivals[wid, t])
        prompt = self._prompt[wid, t]
        output = self._output[wid, t]
        cfg = self.config
        r = serve_interval(
            self.queue,
            self.running,
            ready_eff,
            arrivals,
            prompt,
            output,
            cfg.interval_s,
            self.lat,
            prompt_cv=self._prompt_cv[wid],
            output_cv=self._output_cv[wid],
            arrival_scv=cfg.arrival_scv,
            timeout_s=cfg.timeout_s,
            ttft_slo_s=cfg.ttft_slo_s,
            tpot_slo_s=cfg.tpot_slo_s,
            ttft_slo_s_per_1k_tokens=cfg.ttft_slo_s_per_1k_tokens,
            running_prompt_tokens=self.running_prompt,
            running_output_tokens=self.running_output,
        )
        assert r.running_prompt_tokens is not None and r.running_output_tokens is not None
        # in place: the attributes are views of the packed state
        self.queue[:], self.running[:] = r.queue, r.running
        self.running_prompt[:], self.running_output[:] = (
            r.running_prompt_tokens,
            r.running_output_tokens,
        )
        return arrivals, prompt, output, r

    def _advance_pipelines(self, head: int, whead: int) -> None:
        """What finishes its start in this interval is ready (or warm) from the next."""
        self.ready += self.starting.count[:, head] + self.waking.count[:, whead]
        self.warm += self.warm_loading.count[:, head]
        for ring, col in ((self.starting, head), (self.warm_loading, head), (self.waking, whead)):
            ring.count[:, col] = 0
            ring.partial[:, col] = 0
        self.t_head += 1
        self.draining[:, :-1] = self.draining[:, 1:]
        self.draining[:, -1] = 0

    def _account(
        self, arrivals: np.ndarray, r: ServeResult, paid: np.ndarray, ready_eff: np.ndarray
    ) -> None:
        dt = self.config.interval_s
        tot = self.totals
        tot.arrived += arrivals
        tot.completed += r.completed
        tot.dropped += r.dropped
        tot.slo_ok += r.slo_ok
        tot.cost_usd += paid * self._usd_per_replica_interval
        tot.gpu_hours += paid * self._gpus * dt / 3600.0
        tot.replica_intervals += ready_eff

    def _write_metrics(
        self,
        target: np.ndarray,
        arrivals: np.ndarray,
        prompt: np.ndarray,
        output: np.ndarray,
        r: ServeResult,
        starting: np.ndarray,
        draining: np.ndarray,
    ) -> None:
        """The IntervalMetrics rows the policies see next (`starting`: starting or waking
        replicas, `draining`: draining ones, both after the pipelines advanced)."""
        dt = self.config.interval_s
        mtr = self.metrics
        mtr[:, _F["time_s"]] = self._start_s[self.wid] + (self.t + 1) * dt
        mtr[:, _F["arrival_rps"]] = arrivals / dt
        mtr[:, _F["prompt_tokens_per_s"]] = r.started * prompt / dt
        mtr[:, _F["output_tokens_per_s"]] = r.completed * output / dt
        mtr[:, _F["requests_waiting"]] = r.queue
        mtr[:, _F["requests_running"]] = r.running
        mtr[:, _F["kv_cache_usage"]] = r.kv_cache_usage
        mtr[:, _F["gpu_utilization_pct"]] = r.gpu_utilization_pct
        mtr[:, _TTFT_COLS] = r.ttft_q[:, _PCT_GRID]
        mtr[:, _TPOT_COLS] = r.tpot_q[:, _PCT_GRID]
        mtr[:, _F["replicas_desired"]] = target
        mtr[:, _F["replicas_ready"]] = self.ready
        mtr[:, _F["replicas_starting"]] = starting
        mtr[:, _F["replicas_warm"]] = self.warm
        mtr[:, _F["replicas_draining"]] = draining
