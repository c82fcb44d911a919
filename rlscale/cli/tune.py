"""`rlscale tune`: tune the HPA-form rule on training workloads and write its manifest.

The search and the manifest are `rlscale.training.tune`; this module parses the options and
records the command in the manifest's `rlscale.io/tuned-by` annotation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlscale.contract import DEFAULT_SLO_TARGET

DEFAULT_PROFILE = "llama-3.1-8b-h100"
DEFAULT_TRIALS = 80
DEFAULT_BATCH = 8
DEFAULT_PEAK_REPLICAS = 12.0
DEFAULT_SEED = 0


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)


def tune_command(
    profile: Annotated[
        str, typer.Option("--profile", help="Shipped profile name or a profile YAML path.")
    ] = DEFAULT_PROFILE,
    train: Annotated[
        list[str] | None,
        typer.Option(
            "--train",
            help="Training workload (repeat): a trace file, PATH@START:END to cut days START..END "
            "of it, or synthetic:SEED. Default: synthetic:101, synthetic:102 and days 0-2 of the ServeGen "
            "m-large trace.",
        ),
    ] = None,
    trials: Annotated[
        int, typer.Option("--trials", min=1, help="Parameter sets to try.")
    ] = DEFAULT_TRIALS,
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="Trials simulated together.")
    ] = DEFAULT_BATCH,
    slo_target: Annotated[
        float,
        typer.Option(
            "--slo-target",
            min=0.0,
            max=1.0,
            help="SLO attainment every training workload must reach.",
        ),
    ] = DEFAULT_SLO_TARGET,
    peak_replicas: Annotated[
        float,
        typer.Option(
            "--peak-replicas",
            min=0.1,
            help="Rescale each workload so its p99 minute needs this many replicas to meet the SLO.",
        ),
    ] = DEFAULT_PEAK_REPLICAS,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", help="Sampler and simulator seed (a rerun gives the same manifest)."
        ),
    ] = DEFAULT_SEED,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Manifest to write (default: rlscale/policies/manifests/tuned-<profile>.yaml).",
        ),
    ] = None,
) -> None:
    """Tune the HPA-form rule (Optuna) on training workloads and write its annotated manifest.

    Do not tune on evaluation traces: evaluate the result with `rlscale evaluate` on others."""
    from rlscale.errors import InputError
    from rlscale.evaluation.evaluate import EvalSettings, resolve_profile
    from rlscale.training.tune import DEFAULT_TRAIN, tune, write_tuned_manifest

    try:
        prof = resolve_profile(profile)
        workloads = train or list(DEFAULT_TRAIN)
        settings = EvalSettings(peak_replicas=peak_replicas, slo_target=slo_target)
        params, record = tune(
            prof,
            workloads,
            trials=trials,
            batch=batch,
            slo_target=slo_target,
            settings=settings,
            seed=seed,
            log=typer.echo,
        )
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    command = tune_command_line(profile, train, trials, batch, slo_target, peak_replicas, seed, out)
    path = write_tuned_manifest(out, prof, params, record, command, slo_target)
    typer.echo(f"best {params.model_dump()} score {record['score']:.4f}; wrote {path}")


def tune_command_line(
    profile: str,
    train: list[str] | None,
    trials: int,
    batch: int,
    slo_target: float,
    peak_replicas: float,
    seed: int,
    out: Path | None,
) -> str:
    """The command as the manifest records it: `rlscale tune --profile P` and the options that
    differ from their defaults, so a reader can rerun it."""
    parts = ["rlscale", "tune", "--profile", profile]
    for flag, value, default in (
        ("--trials", trials, DEFAULT_TRIALS),
        ("--batch", batch, DEFAULT_BATCH),
        ("--slo-target", slo_target, DEFAULT_SLO_TARGET),
        ("--peak-replicas", peak_replicas, DEFAULT_PEAK_REPLICAS),
        ("--seed", seed, DEFAULT_SEED),
    ):
        if value != default:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for t in train or ():
        parts += ["--train", t]
    if out is not None:
        parts += ["--out", str(out)]
    return " ".join(parts)
