"""`rlscale train --config training/default.yaml [--set key.sub=value ...] [--resume DIR]`.

Registered by `rlscale.cli.register(app)`; heavy imports happen inside. A bad config or `--set`
fails before any training with one line naming the file and the field (exit status 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        config: Annotated[
            Path, typer.Option("--config", "-c", help="training config (YAML)")
        ] = Path("training/default.yaml"),
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set", help="override a config field, e.g. ppo.learning_rate=1e-4 (repeatable)"
            ),
        ] = None,
        resume: Annotated[
            Path | None, typer.Option("--resume", help="continue from a checkpoint folder")
        ] = None,
        progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help="show a progress bar")
        ] = True,
        verbose: Annotated[
            int, typer.Option("--verbose", "-v", count=True, help="SB3 verbosity")
        ] = 0,
    ) -> None:
        """Train a PPO autoscaler on traces and write checkpoints/<name>/."""
        from rlscale.errors import InputError
        from rlscale.training.train import TrainConfig, train

        try:
            cfg = TrainConfig.load(config, set_ or [])
            out = train(cfg, resume=resume, progress_bar=progress, verbose=verbose, log=typer.echo)
        except InputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"checkpoint: {out}")
