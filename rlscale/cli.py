"""`rlscale`: one program, one subcommand per job. Each area registers its own commands, and heavy
imports (torch, pandas, the kubernetes client) happen inside the command, so `rlscale --help`
stays fast."""

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


def _register_all() -> None:
    from rlscale import commands

    commands.register(app)


def main() -> None:
    _register_all()
    try:
        app()
    except InputError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
