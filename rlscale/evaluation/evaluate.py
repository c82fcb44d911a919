"""Offline evaluation: every policy on every (profile, workload), same seeds, same simulator.

Fair by construction: for one (profile, workload) every policy runs on the identical re-binned,
re-scaled workload, the same `SimConfig`, the same seeds (so the same cold-start draws, see
`rollout`), and the same starting fleet; only the oracle reads the workload's future. Each policy
is clamped by its own `SafetyLimits` (the HPA by its manifest's behaviour, see
`rlscale.policies.registry`).

Workload scaling. Traces come at whatever absolute rate their service had (Azure's samples run at
3-6 req/s, ServeGen m-large at ~200 req/s), so each is rescaled per profile until its peak needs
`peak_replicas` replicas: the p99 of its 1-minute rate becomes the rate `peak_replicas` replicas
serve within the SLO (`slo_capacity_rps` for the trace's mean request size and spread). With the
defaults the p99 minute needs 12 replicas, and 20 (the HPA manifest's maxReplicas) leaves room for
second-scale bursts above it. A trace longer than a slice can be cut with `PATH@START:END` (days
from its start).

Starting fleet. Every policy starts from the same fleet, sized for the opening: the replicas the
busiest minute of the first `opening_s` (10 min) needs at the same SLO capacity, clipped to each
policy's bounds. A running service has a fleet sized for its load; starting every policy from
the simulator's minimal guess would make the first cold start decide one-hour traces.

Frontiers. `frontiers` (`--frontier`) add a family of specs per dial sweep; the result then also
carries every family's cost at one SLO attainment (`rlscale.evaluation.frontier`). Every policy,
a sweep's points included, is built by `make_policy` from its spec.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlscale.contract import DEFAULT_SLO_TARGET, FIELD_INDEX
from rlscale.errors import InputError
from rlscale.evaluation.frontier import Frontier, FrontierReport, frontier_specs, score_frontiers
from rlscale.evaluation.rollout import ENGINES, RunSummary, rollout, shield_for
from rlscale.policies.registry import PolicyFactory, PolicySpec, default_limits, make_policy
from rlscale.profiles.model import ServiceProfile, load_profile
from rlscale.serving.capacity import replica_capacity_rps, slo_capacity_rps
from rlscale.serving.model import SimConfig
from rlscale.serving.shield import ShieldConfig
from rlscale.traces.transforms import rate_factor
from rlscale.traces.workload import Workload

if TYPE_CHECKING:
    from rlscale.envs.requests import RequestTrace

_F = FIELD_INDEX
SYNTHETIC = "synthetic"
DEFAULT_POLICIES: tuple[str, ...] = ("hpa", "threshold", "tuned", "predictive", "static", "oracle")
DEFAULT_PROFILE = "llama-3.1-8b-h100"
METRIC_FIELDS: tuple[str, ...] = (
    "gpu_hours",
    "cost_usd",
    "cost_vs_oracle",
    "cost_vs_baseline",
    "slo_attainment",
    "ttft_p50_s",
    "ttft_p95_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p95_s",
    "tpot_p99_s",
    "requests",
    "dropped",
    "scale_events",
    "cold_starts",
    "mean_replicas",
    "scale_events_per_day",
    "cold_starts_per_day",
)


@dataclass(frozen=True)
class EvalSettings:
    seeds: tuple[int, ...] = (0, 1, 2)
    peak_replicas: float = 12.0
    peak_quantile: float = 0.99
    opening_s: float = 600.0
    min_replicas: int = 2
    max_replicas: int = 20
    slo_target: float = DEFAULT_SLO_TARGET
    baseline: str = "tuned"
    synthetic_seed: int = 0
    config: SimConfig = SimConfig()
    engine: str = "fluid"  # or "requests": the request-level engine (`rollout.ENGINES`)
    # False: every workload runs as recorded, not rescaled to `peak_replicas` (`rlscale whatif`:
    # the user's own traffic at its own rate)
    rescale: bool = True
    # the run-time shield learned (`ppo:`) policies run under, as a controller target's `shield:`
    # section sets it; rules run unshielded (`serving.shield.default_shield`)
    shield: ShieldConfig = ShieldConfig()

    def __post_init__(self) -> None:
        # a typo fails here, not at the first evaluation
        PolicySpec.parse(self.baseline, "baseline")
        if self.engine not in ENGINES:
            raise InputError(
                "--engine",
                f"expected one of {', '.join(ENGINES)}, got {self.engine!r}",
                field="engine",
            )


@dataclass
class Timeline:
    """Seed 0 of one policy on one workload, for the plots (per interval)."""

    time_s: np.ndarray
    arrival_rps: np.ndarray
    replicas_ready: np.ndarray
    replicas_provisioned: np.ndarray
    ttft_p95_s: np.ndarray


@dataclass
class EvalResult:
    settings: EvalSettings
    records: list[dict[str, Any]]  # per seed and aggregate ("seed": "mean")
    timelines: dict[tuple[str, str, str], Timeline]  # (profile, workload, policy)
    workloads: dict[tuple[str, str], dict[str, Any]]  # (profile, workload) -> scaling info
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    frontier: FrontierReport | None = None  # `--frontier` scoring (`rlscale.evaluation.frontier`)

    def aggregates(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["seed"] == "mean"]


def resolve_profile(name_or_path: str | Path) -> ServiceProfile:
    """A shipped profile by name or a YAML path."""
    return load_profile(name_or_path)


def parse_trace_arg(arg: str) -> tuple[str, tuple[float, float] | None]:
    """`PATH` or `PATH@START:END` (days from the trace's start)."""
    if arg.startswith(SYNTHETIC) or Path(arg).exists() or "@" not in arg:
        return arg, None
    path, _, rng = arg.rpartition("@")
    try:
        a, b = (float(x) for x in rng.split(":"))
    except ValueError:
        raise InputError(
            arg,
            "expected PATH@START:END with START and END in days, e.g. trace.csv@7:9",
            field="trace",
        ) from None
    if not 0 <= a < b:
        raise InputError(arg, f"expected 0 <= START < END, got {a:g}:{b:g}", field="trace")
    return path, (a, b)


def load_source(arg: str, interval_s: float, synthetic_seed: int = 0) -> Workload:
    """The workload behind a `--trace` argument (not yet scaled), re-binned to `interval_s`."""
    if arg == SYNTHETIC or arg.startswith(SYNTHETIC + ":"):
        from rlscale.traces.synthetic import default_workload

        _, _, seed = arg.partition(":")
        try:
            wseed = int(seed) if seed else synthetic_seed
        except ValueError:
            raise InputError(arg, "expected synthetic or synthetic:SEED", field="trace") from None
        return default_workload(wseed).rebin(interval_s)
    from rlscale.traces.loaders import load_workload
    from rlscale.traces.transforms import slice_window

    path, days = parse_trace_arg(arg)
    w = load_workload(path, interval_s=interval_s)
    if days is not None:
        w = slice_window(w, days[0] * 86_400.0, days[1] * 86_400.0)
        w = w.with_(name=f"{w.name}@{days[0]:g}-{days[1]:g}d")
    return w.rebin(interval_s)


def request_replay(arg: str, scale_factor: float) -> RequestTrace | None:
    """The requests of a per-request trace (Azure CSV) behind a `--trace` argument, cut to its
    window and scaled like its workload, for the request-level engine to replay as recorded; None
    for rate traces (the engine synthesises their requests from the bins)."""
    from rlscale.envs.requests import load_azure_requests
    from rlscale.traces.loaders import detect_format

    path, days = parse_trace_arg(arg)
    if arg.startswith(SYNTHETIC) or detect_format(path) != "azure":
        return None
    trace = load_azure_requests(path)
    if days is not None:
        lo, hi = days[0] * 86_400.0, days[1] * 86_400.0
        keep = (trace.arrival_s >= lo) & (trace.arrival_s < hi)
        trace = replace(
            trace,
            arrival_s=trace.arrival_s[keep] - lo,
            prompt_tokens=trace.prompt_tokens[keep],
            output_tokens=trace.output_tokens[keep],
            start_s=trace.start_s + lo,
        )
    # seeded by the trace alone, so every policy replays the same requests
    if not math.isfinite(scale_factor):
        return trace
    return trace.scaled(scale_factor, np.random.default_rng(0))


def mean_sizes(w: Workload) -> tuple[float, float]:
    n = float(w.arrivals.sum())
    if n <= 0:
        return float(np.mean(w.prompt_tokens)), float(np.mean(w.output_tokens))
    return float((w.prompt_tokens * w.arrivals).sum() / n), float(
        (w.output_tokens * w.arrivals).sum() / n
    )


def slo_capacity_for(w: Workload, profile: ServiceProfile, settings: EvalSettings) -> float:
    """Per-replica rate within the SLO for this workload's requests at `peak_replicas`."""
    isl, osl = mean_sizes(w)
    cfg = settings.config
    return slo_capacity_rps(
        profile,
        isl,
        osl,
        replicas=max(int(round(settings.peak_replicas)), 1),
        slo_target=settings.slo_target,
        prompt_cv=w.prompt_tokens_cv,
        ttft_slo_s=cfg.ttft_slo_s,
        tpot_slo_s=cfg.tpot_slo_s,
        arrival_scv=cfg.arrival_scv,
        ttft_slo_s_per_1k_tokens=cfg.ttft_slo_s_per_1k_tokens,
    )


def scale_for_profile(
    w: Workload, profile: ServiceProfile, settings: EvalSettings
) -> tuple[Workload, dict[str, Any]]:
    """Rescale `w` so its peak needs `settings.peak_replicas` replicas of `profile` (module doc)."""
    from rlscale.evaluation.attainable import attainability, unattainable_problem
    from rlscale.traces.transforms import scale_to_fleet

    isl, osl = mean_sizes(w)
    cap = slo_capacity_for(w, profile, settings)
    replicas = max(int(round(settings.peak_replicas)), 1)
    reach = attainability(w, profile, settings.config, settings.slo_target, replicas, sized=cap > 0)
    if reach.share < settings.slo_target or cap <= 0:
        # the SLO, not the autoscaler, is the problem: say so (module attainable's doc)
        raise InputError(
            f"{w.name} on {profile.name}",
            unattainable_problem(settings.config, settings.slo_target, reach),
        )
    scaled = (
        scale_to_fleet(w, settings.peak_replicas, cap, settings.peak_quantile, over_s=60.0)
        if settings.rescale
        else w
    )
    info = {
        "source": w.source,
        "bins": w.n_bins,
        "interval_s": w.interval_s,
        "duration_h": w.duration_s / 3600.0,
        "slo_capacity_rps": cap,
        # share of the requests an idle fleet serves within the SLO: the most any policy attains
        "idle_slo_share": reach.share,
        "knee_capacity_rps": replica_capacity_rps(profile, isl, osl),
        "mean_prompt_tokens": isl,
        "mean_output_tokens": osl,
        "scale_factor": float(scaled.meta.get("transforms", [{}])[-1].get("factor", float("nan")))
        if settings.rescale
        else 1.0,
        "mean_rps": float(scaled.rate_rps.mean()),
        # calendar minutes; a trace shorter than one is its own peak (a partial bin reads low)
        "peak_1min_rps": float(scaled.rebin(60.0).rate_rps.max())
        if scaled.duration_s >= 60.0
        else float(scaled.arrivals.sum() / scaled.duration_s),
        "opening_replicas": opening_replicas(scaled, cap, settings.opening_s),
    }
    return scaled, info


def opening_replicas(w: Workload, capacity_rps: float, opening_s: float = 600.0) -> int:
    """Replicas for the busiest minute of the first `opening_s` at `capacity_rps` each."""
    head = w.rebin(60.0).rate_rps[: max(1, int(round(opening_s / 60.0)))]
    return max(1, math.ceil(float(head.max()) / capacity_rps - 1e-9))


def _timeline(tl: np.ndarray, arrivals: np.ndarray, interval_s: float) -> Timeline:
    m = tl[:, 0, :]
    return Timeline(
        time_s=m[:, _F["time_s"]].copy(),
        arrival_rps=arrivals[:, 0] / interval_s,
        replicas_ready=m[:, _F["replicas_ready"]].copy(),
        replicas_provisioned=m[:, _F["replicas_ready"]] + m[:, _F["replicas_starting"]],
        ttft_p95_s=m[:, _F["ttft_p95_s"]].copy(),
    )


def _summary_record(s: RunSummary, workload: str) -> dict[str, Any]:
    d = s.as_dict()
    d["workload"] = workload
    return d


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of one (profile, workload, policy)."""
    first = records[0]
    out: dict[str, Any] = {k: first[k] for k in ("policy", "workload", "profile")}
    out["seed"] = "mean"
    out["seeds"] = len(records)
    for k in METRIC_FIELDS:
        vals = np.array(
            [r.get(k) for r in records if r.get(k) is not None and not _isnan(r.get(k))],
            dtype=float,
        )
        out[k] = float(vals.mean()) if len(vals) else None
        out[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0 if len(vals) else None
    return out


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def run_evaluation(
    policies: Sequence[str],
    traces: Sequence[str],
    profiles: Sequence[ServiceProfile],
    settings: EvalSettings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    on_step: Callable[[], None] | None = None,
    frontiers: Sequence[Frontier] = (),
    at_slo: float | None = None,
) -> EvalResult:
    """Run every policy on every (profile, trace). The oracle and the baseline are added when
    not asked for, since every record reports cost relative to both. `on_step` is called once
    per finished rollout (the progress bar). With `frontiers` their points run too and the
    result carries their scoring at SLO attainment `at_slo` (default: the baseline's;
    `rlscale.evaluation.frontier`)."""
    settings = settings or EvalSettings()
    specs = list(dict.fromkeys([*policies, *frontier_specs(frontiers)]))
    for ref in ("oracle", settings.baseline):
        if ref not in specs:
            specs.append(ref)
    started = time.perf_counter()
    cfg = settings.config
    records: list[dict[str, Any]] = []
    timelines: dict[tuple[str, str, str], Timeline] = {}
    winfo: dict[tuple[str, str], dict[str, Any]] = {}
    pinfo: dict[str, dict[str, Any]] = {}
    raw_cache: dict[str, Workload] = {}
    for profile in profiles:
        limits = default_limits(
            settings.min_replicas, settings.max_replicas, profile.gpus_per_replica
        )
        for trace in traces:
            if trace not in raw_cache:
                raw_cache[trace] = load_source(trace, cfg.interval_s, settings.synthetic_seed)
            w, info = scale_for_profile(raw_cache[trace], profile, settings)
            replay = (
                request_replay(trace, rate_factor(w)) if settings.engine == "requests" else None
            )
            winfo[(profile.name, w.name)] = info
            per_policy: dict[str, list[dict[str, Any]]] = {}
            factories: list[PolicyFactory] = []
            for spec in specs:
                f = make_policy(
                    spec,
                    profile=profile,
                    workload=w,
                    limits=limits,
                    config=cfg,
                    slo_target=settings.slo_target,
                    initial_replicas=info["opening_replicas"],
                )
                factories.append(f)
            names = _unique([f.name for f in factories])
            for spec, f, name in zip(specs, factories, names, strict=True):
                if progress:
                    progress(f"{profile.name} / {w.name} / {name}")
                t0 = time.perf_counter()
                start = int(
                    np.clip(info["opening_replicas"], f.limits.min_replicas, f.limits.max_replicas)
                )
                ro = rollout(
                    f,
                    profile,
                    w,
                    seeds=settings.seeds,
                    limits=f.limits,
                    config=cfg,
                    record=True,
                    initial_replicas=start,
                    engine=settings.engine,
                    requests=replay,
                    shield=settings.shield if shield_for(f) is not None else None,
                )
                run_s = time.perf_counter() - t0
                recs = [_summary_record(s, w.name) for s in ro.summaries]
                days = info["duration_h"] / 24.0
                for r in recs:
                    r["scale_events_per_day"] = r["scale_events"] / days
                    r["cold_starts_per_day"] = r["cold_starts"] / days
                # per-workload facts of the policy (the oracle's planned attainment, static's count)
                facts = {
                    k: v
                    for k, v in f.info.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                for r in recs:
                    r["policy"] = name
                    r["spec"] = spec
                    r["run_s"] = run_s
                    r.update(facts)
                per_policy[name] = recs
                timelines[(profile.name, w.name, name)] = _timeline(
                    ro.timeline, ro.arrivals, cfg.interval_s
                )
                pinfo.setdefault(name, {"spec": spec, "limits": f.limits.model_dump(), **f.info})
                if on_step:
                    on_step()
            oracle_name = names[specs.index("oracle")]
            base_name = names[specs.index(settings.baseline)]
            for name in names:
                recs = per_policy[name]
                for i, r in enumerate(recs):
                    r["cost_vs_oracle"] = _ratio(
                        r["cost_usd"], per_policy[oracle_name][i]["cost_usd"]
                    )
                    r["cost_vs_baseline"] = _ratio(
                        r["cost_usd"], per_policy[base_name][i]["cost_usd"]
                    )
                    r["baseline"] = base_name
                agg = aggregate(recs)
                # relative cost of the means, not the mean of per-seed ratios
                agg["cost_vs_oracle"] = _ratio(
                    agg["cost_usd"], aggregate(per_policy[oracle_name])["cost_usd"]
                )
                agg["cost_vs_baseline"] = _ratio(
                    agg["cost_usd"], aggregate(per_policy[base_name])["cost_usd"]
                )
                agg["baseline"] = base_name
                agg["spec"] = recs[0]["spec"]
                agg.update(
                    {k: recs[0][k] for k in recs[0] if k not in agg and k not in ("seed", "run_s")}
                )
                records.extend(recs)
                records.append(agg)
    result = EvalResult(settings, records, timelines, winfo, pinfo)
    if frontiers:
        result.frontier = score_frontiers(
            records, frontiers, baseline=settings.baseline, at_slo=at_slo
        )
    result.elapsed_s = time.perf_counter() - started
    return result


def _unique(names: Sequence[str]) -> list[str]:
    """Policy names made unique within one run (`static`, `static#2`, ...)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return float(a / b)


def count_runs(
    policies: Sequence[str],
    traces: Sequence[str],
    profiles: Sequence[Any],
    baseline: str,
    frontiers: Sequence[Frontier] = (),
) -> int:
    policies = list(dict.fromkeys([*policies, *frontier_specs(frontiers)]))
    n = len(dict.fromkeys(list(policies) + [p for p in ("oracle", baseline) if p not in policies]))
    return n * len(traces) * len(profiles)
