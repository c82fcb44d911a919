"""Subcommands of this area (registered into `rlscale` by rlscale.commands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`. Import heavy modules inside each command."""
