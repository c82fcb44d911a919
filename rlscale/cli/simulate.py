"""`rlscale simulate`: one policy on one workload, with a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def load_sized_workload(
    trace: str | None, fmt: str | None, profile_capacity_rps: float, peak_replicas: int | None, seed: int
):
    """The workload a command runs on: the synthetic default when no trace is given, otherwise
    the file; rescaled so its p99 interval needs `peak_replicas` replicas (trace rates are
    samples of other fleets, so absolute rates mean little)."""
    from rlscale.traces.synthetic import default_workload
    from rlscale.traces.transforms import scale_to_fleet

    if trace is None or trace == "synthetic":
        w = default_workload(seed=seed)
        peak_replicas = peak_replicas or 12
    else:
        from rlscale.traces.loaders import load_workload

        w = load_workload(Path(trace), fmt, interval_s=1.0, seed=seed)
    if peak_replicas:
        w = scale_to_fleet(w, peak_replicas, profile_capacity_rps)
    return w


def simulate(
    trace: Annotated[str | None, typer.Option(help="Trace file (any supported format); default: the built-in synthetic day.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="Trace format; detected from the file when omitted.")] = None,
    profile: Annotated[str, typer.Option(help="Shipped profile name or a profile YAML path.")] = "llama-3.1-8b-h100",
    policy: Annotated[str, typer.Option(help="Policy: static, static:N, or any name `rlscale evaluate` accepts.")] = "static",
    peak_replicas: Annotated[int | None, typer.Option(help="Rescale the trace so its p99 interval needs N replicas (default 12 for synthetic, off for files).")] = None,
    interval_s: Annotated[float, typer.Option(help="Control interval in seconds.")] = 15.0,
    ttft_slo_s: Annotated[float, typer.Option(help="TTFT SLO in seconds.")] = 2.0,
    tpot_slo_s: Annotated[float, typer.Option(help="TPOT SLO in seconds.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    max_replicas: Annotated[int, typer.Option(help="Upper bound on replicas.")] = 64,
) -> None:
    """Run one policy on one workload in the simulator and print GPU-hours, cost, SLO attainment
    and TTFT p95."""
    from rich.console import Console
    from rich.table import Table

    from rlscale.evaluation.rollout import rollout
    from rlscale.profiles.model import load_profile
    from rlscale.safety import SafetyLimits
    from rlscale.serving.model import SimConfig

    prof = load_profile(profile)
    w = load_sized_workload(trace, fmt, prof.capacity_rps(), peak_replicas, seed)
    limits = SafetyLimits(min_replicas=1, max_replicas=max_replicas, gpus_per_replica=prof.gpus_per_replica)
    cfg = SimConfig(interval_s=interval_s, ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s)
    from rlscale.policies.registry import make_policy

    factory = make_policy(policy, profile=prof, workload=w, limits=limits, config=cfg)
    # a static fleet starts at its size; the others start sized for the first interval's load
    init = factory.info.get("replicas")
    result = rollout(factory, prof, w, seeds=[seed], limits=factory.limits, config=cfg, initial_replicas=init)
    s = result.summaries[0]
    table = Table(title=f"{s.policy} on {w.name} ({prof.name}, {w.duration_s / 3600:.1f} h)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in (
        ("GPU-hours", f"{s.gpu_hours:.1f}"),
        ("cost", f"${s.cost_usd:,.2f}"),
        ("SLO attainment", f"{100 * s.slo_attainment:.2f}%"),
        ("TTFT p95", f"{s.ttft_p95_s:.3f} s"),
        ("TPOT p95", f"{s.tpot_p95_s * 1000:.1f} ms"),
        ("requests", f"{s.requests:,.0f}"),
        ("dropped", f"{s.dropped:,.0f}"),
        ("scale events", str(s.scale_events)),
        ("cold starts", str(s.cold_starts)),
        ("mean ready replicas", f"{s.mean_replicas:.2f}"),
    ):
        table.add_row(label, value)
    Console().print(table)
