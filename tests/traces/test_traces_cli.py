"""`rlscale traces inspect` and `rlscale traces convert`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from typer.testing import CliRunner, Result

from rlscale.cli.traces import register
from rlscale.errors import InputError
from rlscale.traces import load_workload


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps `traces` a subcommand group
        pass

    return app


def _run(args: list[str]) -> Result:
    return CliRunner().invoke(_app(), args, env={"COLUMNS": "200"})  # wide enough not to wrap rows


def test_inspect_prints_the_summary(shared_data: Path) -> None:
    result = _run(["traces", "inspect", str(shared_data / "azure_llm_2023_code.csv")])
    assert result.exit_code == 0, result.output
    for part in ("8,819", "2023-11-16 18:17:03 UTC", "peak rate (1 min)", "peak/trough", "2,048"):
        assert part in result.output


def test_inspect_reports_masked_gaps(shared_data: Path) -> None:
    path = shared_data / "servegen_language_m-mid_total_10min.csv"
    result = _run(["traces", "inspect", str(path), "--interval-s", "60"])
    assert result.exit_code == 0, result.output
    assert "84 windows flagged is_gap" in result.output


def test_convert_writes_a_workload_that_loads_back(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "azure_llm_2023_conv.csv"
    out = tmp_path / "conv.parquet"
    result = _run(["traces", "convert", str(src), str(out), "--interval-s", "5"])
    assert result.exit_code == 0, result.output
    back = load_workload(out)
    direct = load_workload(src, interval_s=5.0)
    assert back.interval_s == 5.0 and back.total_requests == 19_366
    np.testing.assert_array_equal(back.arrivals, direct.arrivals)
    assert back.meta["format"] == "azure"


def test_bad_input_surfaces_as_an_input_error(tmp_path: Path) -> None:
    result = _run(["traces", "inspect", str(tmp_path / "missing.csv")])
    assert isinstance(result.exception, InputError)  # rlscale.cli.main prints it and exits 2
