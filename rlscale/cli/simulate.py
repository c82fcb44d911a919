"""`rlscale simulate`: one policy on one workload, with a summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from rlscale.cli import options as opts
from rlscale.contract import DEFAULT_TPOT_SLO_S

if TYPE_CHECKING:
    from rlscale.evaluation.rollout import RunSummary


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def load_sized_workload(
    trace: str | None,
    fmt: str | None,
    profile_capacity_rps: float,
    peak_replicas: float | None,
    seed: int,
):
    """The workload a command runs on: the synthetic default when no trace is given, otherwise
    the file (or its days, `PATH@START:END`); rescaled so its p99 minute needs `peak_replicas`
    replicas (trace rates are samples of other fleets, so absolute rates mean little)."""
    from rlscale.traces.transforms import scale_to_fleet

    trace = trace or opts.SYNTHETIC
    w = opts.load_trace(trace, fmt, interval_s=1.0, seed=seed)
    if trace == opts.SYNTHETIC or trace.startswith(opts.SYNTHETIC + ":"):
        peak_replicas = peak_replicas or opts.DEFAULT_PEAK_REPLICAS
    if peak_replicas:
        w = scale_to_fleet(w, peak_replicas, profile_capacity_rps)
    return w


def simulate(
    trace: opts.Trace = opts.SYNTHETIC,
    fmt: opts.TraceFormat = None,
    profile: opts.Profile = opts.DEFAULT_PROFILE,
    policy: Annotated[
        str, typer.Option(help="Policy: static, static:N, or any name `rlscale evaluate` accepts.")
    ] = "static",
    peak_replicas: Annotated[
        float | None,
        typer.Option(
            "--peak-replicas",
            min=0.1,
            help=f"{opts.PEAK_REPLICAS_HELP} Default {opts.DEFAULT_PEAK_REPLICAS:g} for the synthetic day, off for files.",
        ),
    ] = None,
    interval_s: Annotated[float, typer.Option(help="Control interval in seconds.")] = 15.0,
    ttft_slo_s: opts.TtftSlo = opts.DEFAULT_TTFT_SLO,
    tpot_slo_s: opts.TpotSlo = DEFAULT_TPOT_SLO_S,
    seeds: opts.Seeds = 1,
    engine: opts.Engine = "fluid",
    min_replicas: opts.MinReplicas = opts.DEFAULT_MIN_REPLICAS,
    max_replicas: opts.MaxReplicas = opts.DEFAULT_MAX_REPLICAS,
) -> None:
    """Run one policy on one workload in the simulator and print GPU-hours, cost, SLO attainment
    and TTFT p95 (with several seeds: the mean and each seed)."""
    from rich.console import Console
    from rich.table import Table

    from rlscale.evaluation.evaluate import request_replay
    from rlscale.evaluation.rollout import rollout
    from rlscale.profiles.model import load_profile
    from rlscale.safety import SafetyLimits
    from rlscale.traces.transforms import rate_factor

    prof = load_profile(profile)
    opts.check_replica_bounds(min_replicas, max_replicas)
    w = load_sized_workload(trace, fmt, prof.capacity_rps(), peak_replicas, seed=0)
    limits = SafetyLimits(
        min_replicas=min_replicas, max_replicas=max_replicas, gpus_per_replica=prof.gpus_per_replica
    )
    cfg = opts.sim_config(ttft_slo_s, tpot_slo_s, interval_s=interval_s)
    from rlscale.policies.registry import make_policy

    factory = make_policy(policy, profile=prof, workload=w, limits=limits, config=cfg)
    # a static fleet starts at its size; the others start sized for the first interval's load
    init = factory.info.get("replicas")
    result = rollout(
        factory,
        prof,
        w,
        seeds=opts.seed_list(seeds),
        limits=factory.limits,
        config=cfg,
        initial_replicas=init,
        engine=engine,
        requests=request_replay(trace, rate_factor(w)) if engine == "requests" else None,
    )
    runs = result.summaries
    s = runs[0]
    title = f"{s.policy} on {w.name} ({prof.name}, {w.duration_s / 3600:.1f} h)"
    table = Table(title=title if len(runs) == 1 else f"{title}, {len(runs)} seeds")
    table.add_column("metric")
    for header in ["value"] if len(runs) == 1 else ["mean", *(f"seed {r.seed}" for r in runs)]:
        table.add_column(header, justify="right")
    for label, value, show in _ROWS:
        values = [value(r) for r in runs]
        cells = [show(v) for v in values]
        if len(runs) > 1:
            cells.insert(0, show(sum(values) / len(values)))
        table.add_row(label, *cells)
    Console().print(table)


def _count(v: float) -> str:
    """A count as it is; a mean of counts with one decimal."""
    return f"{v:.1f}" if isinstance(v, float) else str(v)


# (label, value of one run, how it prints): one row of the summary table
_ROWS: tuple[tuple[str, Callable[[RunSummary], float], Callable[[float], str]], ...] = (
    ("GPU-hours", lambda s: s.gpu_hours, lambda v: f"{v:.1f}"),
    ("cost", lambda s: s.cost_usd, lambda v: f"${v:,.2f}"),
    ("SLO attainment", lambda s: s.slo_attainment, lambda v: f"{100 * v:.2f}%"),
    ("TTFT p95", lambda s: s.ttft_p95_s, lambda v: f"{v:.3f} s"),
    ("TPOT p95", lambda s: s.tpot_p95_s, lambda v: f"{v * 1000:.1f} ms"),
    ("requests", lambda s: s.requests, lambda v: f"{v:,.0f}"),
    ("dropped", lambda s: s.dropped, lambda v: f"{v:,.0f}"),
    ("scale events", lambda s: s.scale_events, _count),
    ("cold starts", lambda s: s.cold_starts, _count),
    ("mean ready replicas", lambda s: s.mean_replicas, lambda v: f"{v:.2f}"),
)
