"""`rlscale profiles fit`: refit the shipped service profiles from the calibration data and write
(or, with --check, compare) `<name>.yaml` and `FITS.md`. The fit itself is rlscale.profiles.fit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `profiles` commands to `app`. pandas and scipy load inside the command."""
    profiles = typer.Typer(
        name="profiles", help="Fit the shipped service profiles.", no_args_is_help=True
    )

    @profiles.command("fit")
    def fit(
        data: Annotated[
            Path | None,
            typer.Option(
                "--data", help="Calibration data (default ../shared/data, or $RLSCALE_SHARED_DATA)."
            ),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out", help="Where the YAML and FITS.md go (default: the shipped profiles)."
            ),
        ] = None,
        check: Annotated[
            bool, typer.Option("--check", help="Write nothing; exit 1 if the files differ.")
        ] = False,
    ) -> None:
        """Fit every profile in rlscale.profiles.fit.SPECS; write <name>.yaml and FITS.md."""
        from rlscale.profiles.fit import default_data_dir, render_all, stale_files, write_files
        from rlscale.profiles.model import PROFILE_DIR

        data_dir = data if data is not None else default_data_dir()
        out_dir = out if out is not None else PROFILE_DIR
        files = render_all(data_dir)
        if check:
            stale = stale_files(files, out_dir)
            for n in stale:
                typer.echo(
                    f"{out_dir / n}: differs from what {data_dir} gives; re-run the fit", err=True
                )
            raise typer.Exit(1 if stale else 0)
        for path in write_files(files, out_dir):
            typer.echo(f"wrote {path}")

    app.add_typer(profiles, name="profiles")
