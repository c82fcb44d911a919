"""`rlscale whatif`: the user's HPA and their exported traffic -> what each policy would have cost
and attained on it, at equal SLO, with the recommended setting (rlscale.evaluation.whatif)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlscale.cli import options as opts
from rlscale.contract import DEFAULT_SLO_TARGET, DEFAULT_TPOT_SLO_S


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`. Import heavy modules inside each command."""

    @app.command("whatif")
    def whatif_command(
        hpa: Annotated[
            Path,
            typer.Option("--hpa", help="Your HorizontalPodAutoscaler manifest (autoscaling/v2)."),
        ],
        trace: Annotated[
            str,
            typer.Option(
                "--trace",
                "-t",
                help="Your traffic: the file `rlscale traces export` wrote (or any trace file; "
                "PATH@START:END cuts days).",
            ),
        ],
        profile: opts.Profile = opts.DEFAULT_PROFILE,
        policy: Annotated[
            list[str] | None,
            typer.Option(
                "--policy",
                "-p",
                help="A policy to compare besides your HPA and the oracle (repeat); replaces the "
                "defaults tuned and the profile's shipped PPO checkpoint.",
            ),
        ] = None,
        frontier: Annotated[
            list[str] | None,
            typer.Option(
                "--frontier",
                "-f",
                help="A family swept over one dial (repeat), as in `rlscale evaluate`; replaces "
                "the default sweeps (your HPA's targets x {0.5..2}, target:{0.6..0.9:0.1}).",
            ),
        ] = None,
        sweep: Annotated[
            bool,
            typer.Option("--sweep/--no-sweep", help="Run the default dial sweeps."),
        ] = True,
        seeds: opts.Seeds = 2,
        engine: opts.Engine = "fluid",
        slo_target: Annotated[
            float,
            typer.Option(
                "--slo-target",
                min=0.0,
                max=1.0,
                help="SLO attainment the recommendation must meet (and the oracle plans for).",
            ),
        ] = DEFAULT_SLO_TARGET,
        ttft_slo_s: opts.TtftSlo = opts.DEFAULT_TTFT_SLO,
        tpot_slo_s: opts.TpotSlo = DEFAULT_TPOT_SLO_S,
        interval_s: Annotated[
            float,
            typer.Option("--interval-s", min=1.0, help="Control interval (the HPA sync period)."),
        ] = 15.0,
        min_replicas: Annotated[
            int | None,
            typer.Option(
                "--min-replicas",
                min=0,
                help="Bounds for policies without their own (default: your HPA's minReplicas).",
            ),
        ] = None,
        max_replicas: Annotated[
            int | None,
            typer.Option("--max-replicas", min=1, help="Default: your HPA's maxReplicas."),
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Folder for whatif.md/json/csv and plots.")
        ] = Path("whatif"),
        plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")] = True,
        progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
        ] = True,
    ) -> None:
        """What your HPA, the tuned rule, target utilisation, PPO and the oracle would have cost
        and attained on your own traffic; writes a Markdown report with plots and names the
        cheapest setting that meets the SLO target."""
        import sys
        import time

        from tqdm import tqdm

        from rlscale.evaluation.evaluate import EvalSettings, resolve_profile
        from rlscale.evaluation.whatif import plan_whatif, run_whatif, write_whatif
        from rlscale.policies.hpa import load_hpa_manifest

        t_start = time.perf_counter()
        prof = resolve_profile(profile)
        if not hpa.is_file():
            from rlscale.errors import InputError

            raise InputError(str(hpa), "file not found", field="--hpa")
        bounds = load_hpa_manifest(hpa).limits
        lo = bounds.min_replicas if min_replicas is None else min_replicas
        hi = bounds.max_replicas if max_replicas is None else max_replicas
        opts.check_replica_bounds(lo, hi)
        settings = EvalSettings(
            seeds=tuple(range(seeds)),
            min_replicas=lo,
            max_replicas=hi,
            slo_target=slo_target,
            engine=engine,
            config=opts.sim_config(ttft_slo_s, tpot_slo_s, interval_s=interval_s),
        )
        plan = plan_whatif(
            trace, prof, hpa, policies=policy, frontiers=frontier, sweep=sweep, settings=settings
        )
        _validate_specs(plan.specs, prof)
        bar = tqdm(
            total=len(plan.specs),
            desc="whatif",
            unit="run",
            disable=not progress,
            file=sys.stderr,
            leave=False,
        )
        result = run_whatif(
            plan,
            progress=lambda s: bar.set_postfix_str(s, refresh=True),
            on_step=lambda: bar.update(1),
        )
        bar.close()
        files = write_whatif(result, out, plots=plots)
        from rlscale.evaluation.whatif import recommendation_text

        typer.echo(recommendation_text(result).replace("**", ""))
        typer.echo(f"report: {files[0]} (+{len(files) - 1} files)")
        typer.echo(f"done in {time.perf_counter() - t_start:.1f} s")


def _validate_specs(specs: list[str], profile) -> None:
    """Every spec resolves (an unknown policy, a bad manifest or checkpoint fails before minutes
    of simulation); the oracle and static are built per workload."""
    from rlscale.policies.registry import PolicySpec, make_policy

    for text in specs:
        spec = PolicySpec.parse(text)
        if spec.kind not in ("oracle", "static"):
            make_policy(spec, profile=profile)
