"""`rlscale evaluate`: every policy on every trace and profile for several seeds; report and gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlscale.cli import options as opts
from rlscale.contract import DEFAULT_SLO_TARGET, DEFAULT_TPOT_SLO_S


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`. Import heavy modules inside each command."""

    @app.command("evaluate")
    def evaluate_command(
        policy: Annotated[
            list[str] | None,
            typer.Option(
                "--policy",
                "-p",
                help="Policy spec to evaluate (repeat): hpa[:PATH], threshold[:PATH], tuned, predictive, target:U, "
                "static[:N], oracle, ppo:PATH[#slo_weight=W]; the evaluator's own options "
                "oracle|predictive|static#slo_target=S and hpa|tuned#target_scale=F. "
                "Default: every rule policy and the oracle.",
            ),
        ] = None,
        trace: opts.Traces = None,
        profile: opts.Profiles = None,
        seeds: opts.Seeds = 3,
        engine: opts.Engine = "fluid",
        shield: opts.Shield = None,
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Folder for report.md/json/csv and plots.")
        ] = Path("report"),
        peak_replicas: opts.PeakReplicas = opts.DEFAULT_PEAK_REPLICAS,
        min_replicas: opts.MinReplicas = opts.DEFAULT_MIN_REPLICAS,
        max_replicas: opts.MaxReplicas = opts.DEFAULT_MAX_REPLICAS,
        slo_target: opts.SloTarget = DEFAULT_SLO_TARGET,
        ttft_slo_s: opts.TtftSlo = opts.DEFAULT_TTFT_SLO,
        tpot_slo_s: opts.TpotSlo = DEFAULT_TPOT_SLO_S,
        interval_s: Annotated[
            float,
            typer.Option("--interval-s", min=1.0, help="Control interval (the HPA sync period)."),
        ] = 15.0,
        baseline: Annotated[
            str, typer.Option("--baseline", help="Policy that costs are also reported relative to.")
        ] = "tuned",
        gate: Annotated[
            list[str] | None,
            typer.Option(
                "--gate",
                help="Requirement on the candidate, e.g. 'cost<=0.85*tuned', 'slo>=tuned' (repeat).",
            ),
        ] = None,
        gate_file: Annotated[
            Path | None,
            typer.Option("--gate-file", help="YAML gate: {policy: ..., require: [...]}."),
        ] = None,
        gate_policy: Annotated[
            str | None,
            typer.Option(
                "--gate-policy", help="Candidate the gate checks (default: the first --policy)."
            ),
        ] = None,
        frontier: Annotated[
            list[str] | None,
            typer.Option(
                "--frontier",
                "-f",
                help="A policy family swept over one dial (repeat), scored at equal SLO: "
                "'target:{0.5..0.9:0.05}', 'ppo:PATH#slo_weight={2,5,10,20,50}', "
                "'oracle#slo_target={0.95,0.99,0.999}', 'tuned#target_scale={0.6..1.4:0.2}'; "
                "optionally NAME=TEMPLATE.",
            ),
        ] = None,
        at_slo: Annotated[
            float | None,
            typer.Option(
                "--at-slo",
                min=0.0,
                max=1.0,
                help="SLO attainment the frontiers are read at (default: the baseline's).",
            ),
        ] = None,
        plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")] = True,
        progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
        ] = True,
    ) -> None:
        """Evaluate policies offline on the simulator: table, report files, and an optional gate
        (exit status 1 when a requirement is missed)."""
        import sys
        import time

        from tqdm import tqdm

        from rlscale.evaluation.evaluate import (
            DEFAULT_POLICIES,
            DEFAULT_PROFILE,
            SYNTHETIC,
            EvalSettings,
            count_runs,
            resolve_profile,
            run_evaluation,
        )
        from rlscale.evaluation.frontier import Frontier, frontier_specs
        from rlscale.evaluation.report import write_report

        t_start = time.perf_counter()
        frontiers = [Frontier.parse(f) for f in frontier or ()]
        # with frontiers and no --policy: the frontiers alone (plus the oracle and the baseline)
        policies = list(policy or ([] if frontiers else DEFAULT_POLICIES))
        traces = list(trace or [SYNTHETIC])
        profiles = [resolve_profile(p) for p in (profile or [DEFAULT_PROFILE])]
        opts.check_replica_bounds(min_replicas, max_replicas)
        gate_obj, candidate = _gate(gate, gate_file, gate_policy, policies, frontiers)
        # Resolve every policy spec once up front so a typo fails before minutes of simulation.
        _validate_specs(list(dict.fromkeys(policies + frontier_specs(frontiers))), profiles[0])
        settings = EvalSettings(
            seeds=tuple(range(seeds)),
            peak_replicas=peak_replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            slo_target=slo_target,
            baseline=baseline,
            engine=engine,
            config=opts.sim_config(ttft_slo_s, tpot_slo_s, interval_s=interval_s),
            shield=opts.shield_config(shield),
        )
        bar = tqdm(
            total=count_runs(policies, traces, profiles, baseline, frontiers),
            desc="evaluate",
            unit="run",
            disable=not progress,
            file=sys.stderr,
            leave=False,
        )
        result = run_evaluation(
            policies,
            traces,
            profiles,
            settings,
            progress=lambda s: bar.set_postfix_str(s, refresh=True),
            on_step=lambda: bar.update(1),
            frontiers=frontiers,
            at_slo=at_slo,
        )
        bar.close()
        files = write_report(result, out, plots=plots)
        console = _print_tables(result, len(settings.seeds))
        if result.frontier is not None:
            _print_frontiers(console, result.frontier)
            if seeds < 5:
                console.print(f"note: frontiers from {seeds} seeds; compare methods on >= 5")
        console.print(f"report: {', '.join(str(f) for f in files[:3])} (+{len(files) - 3} plots)")
        console.print(f"done in {time.perf_counter() - t_start:.1f} s")
        if gate_obj is not None and candidate is not None:
            _check_gate(console, gate_obj, result, candidate)


def _gate(
    gate: list[str] | None,
    gate_file: Path | None,
    gate_policy: str | None,
    policies: list[str],
    frontiers: tuple[Any, ...] | list[Any] = (),
) -> tuple[Any, str | None]:
    """The gate from --gate-file and --gate, and the candidate it checks (added to `policies`
    unless it names a frontier; default: the first --policy, else the first --frontier)."""
    from rlscale.evaluation.gate import Gate, gate_from_args, load_gate

    gate_obj: Gate | None = load_gate(gate_file) if gate_file is not None else None
    if gate:
        extra = gate_from_args(gate, gate_policy)
        gate_obj = (
            extra
            if gate_obj is None
            else Gate(gate_obj.requirements + extra.requirements, gate_obj.policy or gate_policy)
        )
    if gate_obj is None:
        return None, None
    candidate = gate_policy or gate_obj.policy or (policies[0] if policies else frontiers[0].name)
    if candidate not in policies and not any(candidate in (f.name, f.template) for f in frontiers):
        policies.insert(0, candidate)
    return gate_obj, candidate


def _print_tables(result: Any, n_seeds: int) -> Any:
    """One table per (profile, workload); returns the console for the lines after it."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from rlscale.evaluation.report import TABLE_COLUMNS, fmt_value

    # wide enough for every column when piped (CI logs); a terminal keeps its own width
    console = Console(width=None if sys.stdout.isatty() else 200)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in result.aggregates():
        groups.setdefault((r["profile"], r["workload"]), []).append(r)
    for (prof, wl), rows in groups.items():
        table = Table(title=f"{wl} on {prof}  (mean ± sd over {n_seeds} seeds)")
        for _, header, _ in TABLE_COLUMNS:
            table.add_column(header, justify="left" if header == "policy" else "right")
        for r in rows:
            table.add_row(*(fmt_value(r.get(k), f, r.get(f"{k}_std")) for k, _, f in TABLE_COLUMNS))
        console.print(table)
    return console


def _check_gate(console: Any, gate_obj: Any, result: Any, candidate: str) -> None:
    """Print every requirement check; exit status 1 when one is missed."""
    from rlscale.evaluation.gate import check_gate

    rows = result.frontier.rows if result.frontier is not None else None
    checks = check_gate(gate_obj, result.aggregates(), candidate, rows)
    for c in checks:
        console.print(
            c.message, style="green" if c.passed else "bold red", markup=False, highlight=False
        )
    failed = [c for c in checks if not c.passed]
    if failed:
        console.print(
            f"gate FAILED: {len(failed)} of {len(checks)} requirement checks missed",
            style="bold red",
        )
        raise typer.Exit(1)
    console.print(f"gate passed: {len(checks)} requirement checks", style="green")


def _validate_specs(policies: list[str], profile) -> None:
    """Raise InputError for an unknown policy, an unreadable manifest or checkpoint, before any
    simulation (the policies that read the workload, the oracle and `static`, are checked by
    grammar only: they are built per workload)."""
    from rlscale.policies.registry import PolicySpec, make_policy

    for text in policies:
        spec = PolicySpec.parse(text)
        if spec.kind not in ("oracle", "static"):
            make_policy(spec, profile=profile)


def _print_frontiers(console: Any, rep: Any) -> None:
    """The frontier table per (profile, workload): every family's cost at the SLO point."""
    from rich.table import Table

    from rlscale.evaluation.report import FRONTIER_COLUMNS, fmt_value

    for (prof, wl), rows in rep.groups().items():
        first = rows[0]
        table = Table(
            title=f"{wl} on {prof}: cost at SLO {100 * first['slo_point']:.2f} % "
            f"(best rule {first.get('best_rule') or '-'}, oracle {first.get('best_oracle') or '-'}; "
            "'-': outside the frontier)"
        )
        for _, header, _ in FRONTIER_COLUMNS:
            table.add_column(header, justify="left" if header == "family" else "right")
        for r in rows:
            if r["role"] != "reference":
                table.add_row(
                    *(fmt_value(r.get(k), f, r.get(f"{k}_std")) for k, _, f in FRONTIER_COLUMNS)
                )
        console.print(table)
