"""The fleet simulated request by request: `RequestSim` has `ClusterSim`'s interface (constructor,
`reset`, `step`, `metrics`, `totals`, `last`, `last_arrivals`, `ready`, `t`, `t_end`, `done`), so
the evaluator can run a policy on either engine; each cluster's serving is a
`rlscale.serving.engine.FleetEngine` instead of the fluid `serve_interval`.

Replica lifecycle, per cluster, as `ClusterSim`'s:

    starting --(cold start, sampled per replica)--> ready --(scale down)--> draining --> gone
    warm-loading --(fill)--> warm (standby) --(scale up, wake time)--> ready  (`profiles.standby`)

A scale-up takes warm replicas first, then cold-starts new ones; a scale-down cancels replicas
still starting (latest-ready first), then waking ones, then drains the newest ready ones. Here a
replica is a replica: it takes requests from the second its start ends (not from the next
interval), and a draining one finishes the requests it holds (running and queued) and is paid
until it is empty. Everything that holds GPUs is paid: starting, ready, draining, warm-loading,
warm, waking.

Requests: a `Workload` (rate trace) gets requests synthesised per bin: a renewal process of the
bin's rate whose inter-arrival times have squared CV `SimConfig.arrival_scv` (1 = Poisson),
carried across bins in cumulative-intensity time; sizes lognormal with the bin's mean and the
workload's CV (`prompt_tokens_cv`, `output_tokens_cv`; 0 = constant). A `RequestTrace` (per-request
arrivals, e.g. the Azure CSV via `load_azure_requests`) is replayed as it is.

Metrics rows are in `contract.FIELDS` order with vLLM's meaning: TTFT percentiles over the first
tokens of the interval (when there are none, the age of the oldest waiting request), TPOT over the
requests completed in it, gauges at the interval's end, GPU utilisation the share of time a
replica ran an iteration. SLO attainment counts completed requests within both SLOs; a dropped
request is a miss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rlscale.contract import FIELD_INDEX, N_FIELDS
from rlscale.envs.cluster import Totals
from rlscale.errors import InputError
from rlscale.profiles.model import LatencyModel, ServiceProfile
from rlscale.profiles.standby import standby
from rlscale.serving.engine import AdvanceStats, EngineConfig, FleetEngine
from rlscale.serving.model import P_GRID, SimConfig
from rlscale.traces.workload import Workload

_F = FIELD_INDEX


@dataclass(frozen=True)
class RequestTrace:
    """Per-request arrivals: `arrival_s` sorted, seconds from `start_s` (the trace's clock)."""

    name: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    start_s: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if n == 0:
            raise InputError(self.name, "the trace has no requests")
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise InputError(
                self.name, f"sizes must have one value per request ({n})", field="prompt_tokens"
            )
        if np.any(np.diff(self.arrival_s) < 0) or self.arrival_s[0] < 0:
            raise InputError(self.name, "arrival times must be sorted and >= 0", field="arrival_s")

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1]) + 1e-9

    def to_workload(self, interval_s: float) -> Workload:
        """The rate trace of these requests (bins from `start_s`), for metrics and for the fluid
        model to serve the same load."""
        n_bins = max(1, int(math.ceil(self.duration_s / interval_s)))
        idx = np.minimum((self.arrival_s // interval_s).astype(np.int64), n_bins - 1)
        arrivals = np.bincount(idx, minlength=n_bins).astype(float)
        means = []
        for sizes in (self.prompt_tokens, self.output_tokens):
            tot = np.bincount(idx, weights=sizes, minlength=n_bins)
            with np.errstate(invalid="ignore", divide="ignore"):
                means.append(
                    np.where(arrivals > 0, tot / np.maximum(arrivals, 1), float(np.mean(sizes)))
                )
        return Workload(
            name=self.name,
            source=f"requests:{self.name}",
            interval_s=float(interval_s),
            arrivals=arrivals,
            prompt_tokens=means[0],
            output_tokens=means[1],
            start_s=self.start_s,
            prompt_tokens_cv=_cv(self.prompt_tokens),
            output_tokens_cv=_cv(self.output_tokens),
            meta={"requests": int(len(self.arrival_s))},
        )

    def scaled(self, factor: float, rng: np.random.Generator) -> RequestTrace:
        """The same trace at `factor` x the rate over the same span: each request is kept
        floor(factor) times plus once more with probability frac(factor); a copy lands uniformly
        between its original and the next request, so the rate within every gap of the original is
        scaled (sub-second bursts included) and the duration is unchanged."""
        if not factor > 0:
            raise InputError(self.name, f"expected a factor > 0, got {factor}", field="factor")
        n = len(self.arrival_s)
        copies = np.floor(factor) + (rng.random(n) < factor - np.floor(factor))
        src = np.repeat(np.arange(n), copies.astype(np.int64))
        gap = np.diff(self.arrival_s, append=self.arrival_s[-1])
        first = np.concatenate([[True], src[1:] != src[:-1]])
        # the first copy of each request keeps its time; the others spread over the gap after it
        t = self.arrival_s[src] + np.where(first, 0.0, rng.random(src.size) * gap[src])
        order = np.argsort(t, kind="stable")
        return RequestTrace(
            name=f"{self.name}x{factor:.3g}",
            arrival_s=t[order],
            prompt_tokens=self.prompt_tokens[src][order],
            output_tokens=self.output_tokens[src][order],
            start_s=self.start_s,
        )

    def with_prompt_scale(self, factor: float) -> RequestTrace:
        """Every request's prompt x `factor` (rounded, at least 1 token); arrivals and outputs
        as recorded: `traces.transforms.scale_prompts` request by request."""
        if not factor > 0:
            raise InputError(
                self.name, f"expected a factor > 0, got {factor}", field="prompt_scale"
            )
        prompt = np.maximum(np.round(self.prompt_tokens * factor), 1).astype(np.int64)
        return replace(self, name=f"{self.name}~prompts×{factor:g}", prompt_tokens=prompt)

    def with_rate_step(self, at_s: float, factor: float, rng: np.random.Generator) -> RequestTrace:
        """The requests from `at_s` on at `factor` x their rate (`scaled` on that part; an abrupt
        step), the ones before as recorded."""
        cut = int(np.searchsorted(self.arrival_s, at_s, side="left"))
        if cut >= len(self.arrival_s):
            return self
        tail = replace(
            self,
            arrival_s=self.arrival_s[cut:] - self.arrival_s[cut],
            prompt_tokens=self.prompt_tokens[cut:],
            output_tokens=self.output_tokens[cut:],
        ).scaled(factor, rng)
        return replace(
            self,
            name=f"{self.name}~rate-step×{factor:g}",
            arrival_s=np.concatenate([self.arrival_s[:cut], tail.arrival_s + self.arrival_s[cut]]),
            prompt_tokens=np.concatenate([self.prompt_tokens[:cut], tail.prompt_tokens]),
            output_tokens=np.concatenate([self.output_tokens[:cut], tail.output_tokens]),
        )


def load_azure_requests(path: str | Path, name: str | None = None) -> RequestTrace:
    """The requests of an Azure LLM 2023 CSV (`TIMESTAMP`, `ContextTokens`, `GeneratedTokens`);
    the loaders' `Workload` keeps only per-bin means, this keeps every request."""
    from rlscale.traces.loaders import read_azure_requests

    p = Path(path)
    if not p.exists():
        raise InputError(str(p), "file not found")
    t, prompt, output = read_azure_requests(p)
    return RequestTrace(
        name=name or p.stem,
        arrival_s=t - t[0],
        prompt_tokens=np.maximum(np.round(prompt), 1).astype(np.int64),
        output_tokens=np.maximum(np.round(output), 1).astype(np.int64),
        start_s=float(t[0]),
    )


def _cv(x: np.ndarray) -> float:
    m = float(np.mean(x))
    return float(np.std(x) / m) if m > 0 else 0.0


@dataclass
class RequestIntervalResult:
    """One interval per cluster (arrays (B,)), the fields of `serving.model.ServeResult` that a
    request-level engine observes directly."""

    started: np.ndarray  # requests whose first token came in the interval
    completed: np.ndarray
    dropped: np.ndarray
    queue: np.ndarray
    running: np.ndarray
    slo_ok: np.ndarray  # completed within both SLOs
    preemptions: np.ndarray
    ttft_q: np.ndarray  # (B, len(P_GRID)) quantiles of the interval's TTFTs
    tpot_q: np.ndarray

    @classmethod
    def zeros(cls, batch: int) -> RequestIntervalResult:
        z = {k: np.zeros(batch) for k in cls.__dataclass_fields__ if not k.endswith("_q")}
        return cls(
            **z, ttft_q=np.zeros((batch, len(P_GRID))), tpot_q=np.zeros((batch, len(P_GRID)))
        )


@dataclass
class _Replica:
    kind: str  # "cold" (starting), "wake" (waking), "ready", "drain"
    ready_at_s: float


@dataclass
class _Cluster:
    engine: FleetEngine
    replicas: dict[int, _Replica] = field(default_factory=dict)
    warm: int = 0
    warm_loading: list[float] = field(default_factory=list)  # ready times
    next_point: float = 0.0  # next arrival in cumulative-intensity units past the bin start
    trace_pos: int = 0
    cold_scale: float = 1.0
    fresh: bool = True  # no step since reset
    log_ttft: list[np.ndarray] = field(default_factory=list)
    log_tpot: list[np.ndarray] = field(default_factory=list)

    def accepting(self) -> list[int]:
        return [s for s, r in self.replicas.items() if r.kind != "drain"]


class RequestSim:
    """B clusters of one `ServiceProfile` serving a workload request by request (one
    `FleetEngine` each). Same interface as `rlscale.envs.cluster.ClusterSim`; `workloads` may also
    be `RequestTrace`s, replayed request by request. `record_requests=True` keeps every completed
    request's TTFT and TPOT (`request_log`)."""

    def __init__(
        self,
        profile: ServiceProfile,
        workloads: Sequence[Workload | RequestTrace],
        batch: int = 1,
        config: SimConfig | None = None,
        seed: int | None = None,
        *,
        engine: EngineConfig | None = None,
        record_requests: bool = False,
    ) -> None:
        if not workloads:
            raise ValueError("RequestSim needs at least one workload")
        self.profile = profile
        self.config = cfg = config or SimConfig()
        # what a warm-pool member is: its fill and wake times (`profiles.standby`)
        self.standby = standby(profile, cfg.standby_tier)
        self.engine_config = engine or EngineConfig()
        self.batch = batch
        self.record_requests = record_requests
        dt = cfg.interval_s
        self.traces: list[RequestTrace | None] = [
            w if isinstance(w, RequestTrace) else None for w in workloads
        ]
        self.workloads = [
            w.to_workload(dt) if isinstance(w, RequestTrace) else w.rebin(dt) for w in workloads
        ]
        self._lengths = np.array([w.n_bins for w in self.workloads])
        self._start_s = np.array([w.start_s for w in self.workloads])
        self._usd_per_replica_s = profile.replica_usd_per_hour / 3600.0
        self._gpus = profile.gpus_per_replica
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
        """Reset all clusters, or those in `mask` (as `ClusterSim.reset`)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        b, dt = self.batch, self.config.interval_s
        full = mask is None
        if full:
            self.clusters: list[_Cluster] = [None] * b  # type: ignore[list-item]
            self.wid = np.zeros(b, dtype=np.int64)
            self.t = np.zeros(b, dtype=np.int64)
            self.t_end = np.zeros(b, dtype=np.int64)
            self.ready = np.zeros(b)
            self.totals = Totals.zeros(b)
            self.metrics = np.zeros((b, N_FIELDS))
            self.done = np.zeros(b, dtype=bool)
            self.last = RequestIntervalResult.zeros(b)
            self.last_arrivals = np.zeros(b)
            self.last_paid = np.zeros(b)
        idx = np.arange(b) if full else np.nonzero(np.asarray(mask, dtype=bool))[0]
        for i in map(int, idx):
            wid = (
                i % len(self.workloads) if workload_index is None else int(_pick(workload_index, i))
            )
            w = self.workloads[wid]
            start = 0 if start_bin is None else int(_pick(start_bin, i))
            end = w.n_bins if episode_bins is None else min(start + episode_bins, w.n_bins)
            self.wid[i], self.t[i], self.t_end[i] = wid, start, end
            if initial_replicas is None:
                rate = w.arrivals[min(start, w.n_bins - 1)] / dt
                init = max(int(math.ceil(rate / (0.7 * self.profile.capacity_rps()))), 1)
            else:
                init = int(_pick(initial_replicas, i))
            c = _Cluster(
                engine=FleetEngine(
                    self._latency(), self.engine_config, timeout_s=self.config.timeout_s
                )
            )
            if self.config.cold_start_jitter > 0:
                c.cold_scale = float(np.exp(self.rng.normal(0.0, self.config.cold_start_jitter)))
            t0 = start * dt
            for _ in range(init):
                c.replicas[c.engine.add_replica(t0, t0)] = _Replica("ready", t0)
            c.next_point = float(self._gaps(1)[0])
            trace = self.traces[wid]
            if trace is not None:
                c.trace_pos = int(np.searchsorted(trace.arrival_s, t0, side="left"))
            self.clusters[i] = c
            self.ready[i] = init
            self.done[i] = False
            for name in Totals.__dataclass_fields__:
                getattr(self.totals, name)[i] = 0
            row = self.metrics[i]
            row[:] = 0
            row[_F["interval_s"]] = dt
            row[_F["time_s"]] = w.start_s + start * dt
            row[_F["arrival_rps"]] = w.arrivals[min(start, w.n_bins - 1)] / dt
            row[_F["replicas_ready"]] = init
            row[_F["replicas_desired"]] = init

    def _latency(self) -> LatencyModel:
        lat = self.profile.latency
        s = self.config.latency_jitter
        if s <= 0:
            return lat
        upd = {}
        for name, v in lat.model_dump().items():
            x = float(v) * float(np.exp(self.rng.normal(0.0, s)))
            upd[name] = max(int(round(x)), 1) if name in ("kv_cache_tokens", "max_batch") else x
        return lat.model_copy(update=upd)

    def _gaps(self, n: int) -> np.ndarray:
        """Inter-arrival times in units of the mean, squared CV `arrival_scv` (gamma renewal)."""
        scv = self.config.arrival_scv
        if abs(scv - 1.0) < 1e-12:
            return self.rng.exponential(1.0, n)
        return self.rng.gamma(1.0 / scv, scv, n)

    # ------------------------------------------------------------------------------------
    def provisioned(self) -> np.ndarray:
        """Replicas counted toward the target: ready, starting and waking."""
        return np.array([len(c.accepting()) for c in self.clusters], dtype=np.float64)

    def step(
        self, target_replicas: np.ndarray, target_warm: np.ndarray | None = None
    ) -> np.ndarray:
        """Advance one interval toward the (already clamped) targets; returns the metrics rows."""
        dt = self.config.interval_s
        target = np.broadcast_to(np.asarray(target_replicas, dtype=np.float64), (self.batch,))
        warm_t = (
            None
            if target_warm is None
            else np.broadcast_to(np.asarray(target_warm, dtype=np.float64), (self.batch,))
        )
        res = RequestIntervalResult.zeros(self.batch)
        for i, c in enumerate(self.clusters):
            t0 = float(self.t[i]) * dt
            self._apply_targets(
                i, c, t0, int(round(target[i])), None if warm_t is None else int(round(warm_t[i]))
            )
            n_arr = 0 if self.done[i] else self._add_arrivals(i, c, t0, dt)
            stats = c.engine.advance(t0, t0 + dt)
            self._account(i, c, t0, dt, n_arr, stats, res, float(target[i]))
        self.last = res
        self.t += 1
        self.done = self.t >= self.t_end
        return self.metrics

    def _apply_targets(
        self, i: int, c: _Cluster, t0: float, target: int, warm_target: int | None
    ) -> None:
        eng = c.engine
        if c.fresh:
            # callers may set `ready` between reset and the first step (the rollout clamps it)
            have = [s for s, r in c.replicas.items() if r.kind == "ready"]
            want = int(round(self.ready[i]))
            for _ in range(want - len(have)):
                c.replicas[eng.add_replica(t0, t0)] = _Replica("ready", t0)
            for s in sorted(have, reverse=True)[: max(len(have) - want, 0)]:
                eng.remove(s)
                del c.replicas[s]
            c.fresh = False
        for _ in range(sum(1 for x in c.warm_loading if x <= t0)):
            c.warm += 1
        c.warm_loading = [x for x in c.warm_loading if x > t0]
        for r in c.replicas.values():
            if r.kind in ("cold", "wake") and r.ready_at_s <= t0:
                r.kind = "ready"
        delta = target - len(c.accepting())
        if delta > 0:
            from_warm = min(delta, c.warm)
            c.warm -= from_warm
            for dur in self.standby.sample_wake_s(self.rng, from_warm) * c.cold_scale:
                c.replicas[eng.add_replica(t0 + float(dur), t0)] = _Replica("wake", t0 + float(dur))
            cold = delta - from_warm
            for dur in self.profile.sample_cold_start_s(self.rng, cold) * c.cold_scale:
                c.replicas[eng.add_replica(t0 + float(dur), t0)] = _Replica("cold", t0 + float(dur))
            self.totals.cold_starts[i] += cold
        elif delta < 0:
            left = -delta
            for kind in ("cold", "wake"):
                pending = sorted((r.ready_at_s, s) for s, r in c.replicas.items() if r.kind == kind)
                for _, s in reversed(pending):
                    if left == 0:
                        break
                    eng.remove(s)
                    del c.replicas[s]
                    left -= 1
            ready = sorted((r.ready_at_s, s) for s, r in c.replicas.items() if r.kind == "ready")
            for _, s in reversed(ready[max(len(ready) - left, 0) :] if left else []):
                eng.drain(s, t0)
                c.replicas[s].kind = "drain"
        self.totals.scale_events[i] += delta != 0
        if warm_target is not None:
            wdelta = warm_target - (c.warm + len(c.warm_loading))
            if wdelta > 0:
                c.warm_loading += [
                    t0 + float(d)
                    for d in self.standby.sample_fill_s(self.rng, wdelta) * c.cold_scale
                ]
                self.totals.cold_starts[i] += wdelta
            elif wdelta < 0:
                left = -wdelta
                c.warm_loading.sort()
                cut = min(left, len(c.warm_loading))
                c.warm_loading = c.warm_loading[: len(c.warm_loading) - cut]
                c.warm -= min(left - cut, c.warm)

    def _add_arrivals(self, i: int, c: _Cluster, t0: float, dt: float) -> int:
        wid = int(self.wid[i])
        trace = self.traces[wid]
        if trace is not None:
            hi = int(np.searchsorted(trace.arrival_s, t0 + dt, side="left"))
            lo = c.trace_pos
            c.trace_pos = hi
            c.engine.add_requests(
                trace.arrival_s[lo:hi], trace.prompt_tokens[lo:hi], trace.output_tokens[lo:hi]
            )
            return hi - lo
        w = self.workloads[wid]
        b = min(int(self.t[i]), w.n_bins - 1)
        a = float(w.arrivals[b])
        if a <= 0:
            return 0
        pts: list[np.ndarray] = []
        x = c.next_point
        while x < a:
            k = int(a - x + 4.0 * math.sqrt(a) + 16)
            g = self._gaps(k)
            pos = x + np.concatenate(([0.0], np.cumsum(g[:-1])))
            inside = pos < a
            pts.append(pos[inside])
            x = pos[-1] + g[-1] if inside.all() else float(pos[int(np.argmin(inside))])
        c.next_point = x - a
        u = np.concatenate(pts) if pts else np.zeros(0)
        n = len(u)
        if n == 0:
            return 0
        times = t0 + u / a * dt
        prompt = _lognormal_sizes(self.rng, float(w.prompt_tokens[b]), w.prompt_tokens_cv, n)
        output = _lognormal_sizes(self.rng, float(w.output_tokens[b]), w.output_tokens_cv, n)
        c.engine.add_requests(times, prompt, output)
        return n

    def _account(
        self,
        i: int,
        c: _Cluster,
        t0: float,
        dt: float,
        n_arr: int,
        st: AdvanceStats,
        res: RequestIntervalResult,
        target: float,
    ) -> None:
        eng = c.engine
        t1 = t0 + dt
        cfg = self.config
        paid_s = (c.warm + len(c.warm_loading)) * dt
        ready_eff = 0.0
        busy_s = served_s = 0.0
        kv = []
        n_ready = n_starting = n_draining = 0
        for s, r in list(c.replicas.items()):
            if r.kind == "drain":
                idle_at = float(eng.rp_idle_at[s])
                if 0 <= idle_at <= t1:
                    paid_s += max(idle_at - t0, 0.0)
                    eng.remove(s)
                    del c.replicas[s]
                else:
                    paid_s += dt
                    n_draining += 1
                continue
            paid_s += dt
            up = min(max((t1 - max(r.ready_at_s, t0)) / dt, 0.0), 1.0)
            ready_eff += up
            if r.ready_at_s <= t1:
                n_ready += 1
                kv.append(eng.rp_kv[s] / eng.kv_cache_tokens)
                busy_s += float(eng.rp_busy_s[s])
                served_s += up * dt
            else:
                n_starting += 1
        ttft = st.ttft_s
        tpot = st.done_tpot_s[st.done_tpot_s > 0]
        # every request against its own class target (`rlscale.slo`: flat unless a slope is set)
        ttft_target = cfg.slo.ttft_target_s(st.done_prompt_tokens)
        ok = int(
            np.count_nonzero((st.done_ttft_s <= ttft_target) & (st.done_tpot_s <= cfg.tpot_slo_s))
        )
        if self.record_requests:
            c.log_ttft.append(st.done_ttft_s)
            c.log_tpot.append(st.done_tpot_s)
        stuck = eng.oldest_waiting_s(t1)
        ttft_q = np.quantile(ttft, P_GRID) if ttft.size else np.full(len(P_GRID), stuck)
        tpot_q = np.quantile(tpot, P_GRID) if tpot.size else np.zeros(len(P_GRID))
        res.started[i] = ttft.size
        res.completed[i] = st.done_ttft_s.size
        res.dropped[i] = st.dropped
        res.queue[i] = eng.waiting
        res.running[i] = eng.running
        res.slo_ok[i] = ok
        res.preemptions[i] = st.preemptions
        res.ttft_q[i] = ttft_q
        res.tpot_q[i] = tpot_q

        tot = self.totals
        tot.arrived[i] += n_arr
        tot.completed[i] += st.done_ttft_s.size
        tot.dropped[i] += st.dropped
        tot.slo_ok[i] += ok
        tot.cost_usd[i] += paid_s * self._usd_per_replica_s
        tot.gpu_hours[i] += paid_s * self._gpus / 3600.0
        tot.replica_intervals[i] += ready_eff

        w = self.workloads[int(self.wid[i])]
        m = self.metrics[i]
        m[_F["time_s"]] = w.start_s + (self.t[i] + 1) * dt
        m[_F["arrival_rps"]] = n_arr / dt
        m[_F["prompt_tokens_per_s"]] = st.prompt_tokens / dt
        m[_F["output_tokens_per_s"]] = st.generated_tokens / dt
        m[_F["requests_waiting"]] = res.queue[i]
        m[_F["requests_running"]] = res.running[i]
        m[_F["kv_cache_usage"]] = float(np.mean(kv)) if kv else 0.0
        m[_F["gpu_utilization_pct"]] = 100.0 * busy_s / served_s if served_s > 0 else 0.0
        m[_F["ttft_p50_s"]], m[_F["ttft_p95_s"]], m[_F["ttft_p99_s"]] = (
            ttft_q[3],
            ttft_q[6],
            ttft_q[7],
        )
        m[_F["tpot_p50_s"]], m[_F["tpot_p95_s"]], m[_F["tpot_p99_s"]] = (
            tpot_q[3],
            tpot_q[6],
            tpot_q[7],
        )
        m[_F["replicas_desired"]] = target
        m[_F["replicas_ready"]] = n_ready
        m[_F["replicas_starting"]] = n_starting
        m[_F["replicas_warm"]] = c.warm
        m[_F["replicas_draining"]] = n_draining
        self.ready[i] = n_ready
        self.last_arrivals[i] = n_arr
        self.last_paid[i] = paid_s / dt

    def request_log(self, i: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(TTFT, TPOT) of every request cluster i completed since reset (`record_requests`)."""
        c = self.clusters[i]
        if not c.log_ttft:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(c.log_ttft), np.concatenate(c.log_tpot)


def _pick(value: np.ndarray | int, i: int) -> int:
    return int(np.asarray(value).reshape(-1)[i]) if np.ndim(value) else int(value)


def _lognormal_sizes(rng: np.random.Generator, mean: float, cv: float, n: int) -> np.ndarray:
    """Integer token counts >= 1, lognormal with this mean and CV (constant when cv = 0)."""
    mean = max(mean, 1.0)
    if cv <= 0:
        return np.full(n, max(int(round(mean)), 1), dtype=np.int64)
    s2 = math.log1p(cv * cv)
    x = rng.lognormal(math.log(mean) - 0.5 * s2, math.sqrt(s2), n)
    return np.maximum(np.round(x), 1).astype(np.int64)
