"""`rlscale`: one program, one subcommand per job, one module per command in this package.

Each module's `register(app)` adds its commands; heavy imports (torch, pandas, the kubernetes
client) happen inside the command, so `rlscale --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from rlscale.errors import InputError

app = typer.Typer(
    name="rlscale",
    help="Reinforcement-learning autoscaler for LLM inference services on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register(app: typer.Typer) -> None:
    """Add every command to `app`."""
    from rlscale.cli import (
        control,
        evaluate,
        profiles,
        sandbox,
        simulate,
        traces,
        train,
        tune,
        whatif,
    )

    for command in (traces, profiles, simulate, evaluate, train, tune, sandbox, control, whatif):
        command.register(app)


def main() -> None:
    register(app)
    try:
        app()
    except InputError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
