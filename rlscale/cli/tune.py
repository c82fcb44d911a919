"""`rlscale tune`: tune the HPA-form rule on training days, select it on validation windows, and
write its manifest.

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
DEFAULT_FINALISTS = 10
DEFAULT_VALIDATION_SEEDS = 3


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
            "of it, or synthetic:SEED, optionally ~prompts=K (every prompt x K). Default: days 0-9 of "
            "ServeGen m-large and m-mid, and m-large days 0-4 with prompts x4.",
        ),
    ] = None,
    validate: Annotated[
        list[str] | None,
        typer.Option(
            "--validate",
            help="Validation window (repeat, same form as --train): the best --finalists training "
            "trials run here and the best is shipped. Default without --train: the first half of "
            "day 10 of m-large and m-mid, and the m-large one with prompts x4; with --train: none.",
        ),
    ] = None,
    finalists: Annotated[
        int, typer.Option("--finalists", min=1, help="Best training trials run on --validate.")
    ] = DEFAULT_FINALISTS,
    validation_seeds: Annotated[
        int, typer.Option("--validation-seeds", min=1, help="Simulator seeds per validation run.")
    ] = DEFAULT_VALIDATION_SEEDS,
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
    """Tune the HPA-form rule (Optuna) on training days, select on validation windows, and write
    its annotated manifest.

    Do not tune on evaluation traces: evaluate the result with `rlscale evaluate` on others."""
    from rlscale.errors import InputError
    from rlscale.evaluation.evaluate import EvalSettings, resolve_profile
    from rlscale.training.tune import DEFAULT_TRAIN, DEFAULT_VALIDATE, tune, write_tuned_manifest

    try:
        prof = resolve_profile(profile)
        workloads = train or list(DEFAULT_TRAIN)
        windows = validate or ([] if train else list(DEFAULT_VALIDATE))
        settings = EvalSettings(peak_replicas=peak_replicas, slo_target=slo_target)
        params, record = tune(
            prof,
            workloads,
            validate=windows,
            trials=trials,
            batch=batch,
            finalists=finalists,
            validation_seeds=validation_seeds,
            slo_target=slo_target,
            settings=settings,
            seed=seed,
            log=typer.echo,
        )
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    command = tune_command_line(
        profile,
        train,
        trials,
        batch,
        slo_target,
        peak_replicas,
        seed,
        out,
        validate=validate,
        finalists=finalists,
        validation_seeds=validation_seeds,
    )
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
    *,
    validate: list[str] | None = None,
    finalists: int = DEFAULT_FINALISTS,
    validation_seeds: int = DEFAULT_VALIDATION_SEEDS,
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
        ("--finalists", finalists, DEFAULT_FINALISTS),
        ("--validation-seeds", validation_seeds, DEFAULT_VALIDATION_SEEDS),
    ):
        if value != default:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for t in train or ():
        parts += ["--train", t]
    for t in validate or ():
        parts += ["--validate", t]
    if out is not None:
        parts += ["--out", str(out)]
    return " ".join(parts)
