"""Collects every area's subcommands into the one `rlscale` program."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from rlscale.agents import cli as agents_cli
    from rlscale.agents import train_cli
    from rlscale.deploy import cli as deploy_cli
    from rlscale.envs import cli as envs_cli
    from rlscale.sandbox import cli as sandbox_cli
    from rlscale.traces import cli as traces_cli

    for area in (traces_cli, envs_cli, agents_cli, train_cli, sandbox_cli, deploy_cli):
        area.register(app)
