"""`rlscale profiles fit`: the command shell around rlscale.profiles.fit."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner, Result

from rlscale.cli.profiles import register
from rlscale.errors import InputError
from rlscale.profiles.model import PROFILE_DIR


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps `profiles` a subcommand group
        pass

    return app


def _run(args: list[str]) -> Result:
    return CliRunner().invoke(_app(), args, env={"COLUMNS": "200"})


def test_fit_help_lists_its_options() -> None:
    result = _run(["profiles", "fit", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--data", "--out", "--check"):
        assert option in result.output


def test_fit_writes_the_shipped_files_byte_for_byte(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    result = _run(["profiles", "fit", "--data", str(shared_data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["FITS.md", "llama-3.1-70b-fp8-4xh100.yaml", "llama-3.1-8b-h100.yaml"]
    for name in written:
        assert (out / name).read_text() == (PROFILE_DIR / name).read_text(), name
        assert f"wrote {out / name}" in result.output


def test_fit_check_mode_finds_the_shipped_files_current(shared_data: Path) -> None:
    result = _run(["profiles", "fit", "--data", str(shared_data), "--check"])
    assert result.exit_code == 0, result.output


def test_fit_check_mode_names_a_stale_file_and_exits_1(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    assert _run(["profiles", "fit", "--data", str(shared_data), "--out", str(out)]).exit_code == 0
    (out / "FITS.md").write_text("edited by hand\n")
    result = _run(["profiles", "fit", "--data", str(shared_data), "--out", str(out), "--check"])
    assert result.exit_code == 1
    assert f"{out / 'FITS.md'}: differs" in result.output and ".yaml" not in result.output


def test_fit_reports_missing_data_as_one_line_error(tmp_path: Path) -> None:
    result = _run(
        ["profiles", "fit", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--check"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)  # rlscale.cli.main prints it and exits 2
    err = str(result.exception)
    assert "perf_aiconfigurator_silicon_sample.csv" in err and "file not found" in err
    assert not (tmp_path / "out").exists()
