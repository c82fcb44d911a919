"""Every kind of bad input is one `InputError` line naming the file, row and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlscale.errors import InputError
from rlscale.traces import load_workload

REQ_HEADER = "timestamp,prompt_tokens,output_tokens\n"


def _fails(path: Path, *expected: str, fmt: str | None = None, **kwargs: object) -> InputError:
    with pytest.raises(InputError) as info:
        load_workload(path, fmt, **kwargs)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert path.name in msg, msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"
    return info.value


def _write(tmp_path: Path, name: str, text: str) -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("1.0,100,10\n2.0,,20\n", ("row 2", "field 'prompt_tokens'", "empty value")),
        ("1.0,100,10\n2.0,abc,20\n", ("row 2", "field 'prompt_tokens'", "'abc'")),
        ("1.0,100,10\n2.0,200,-3\n", ("row 2", "field 'output_tokens'", ">= 0, got -3")),
        ("1.0,100,10\n3.0,200,20\n2.0,300,30\n", ("row 3", "field 'timestamp'", "sorted")),
        ("1.0,100,10\nNaN,200,20\n", ("row 2", "field 'timestamp'")),
        ("1.0,100,10\ninf,200,20\n", ("row 2", "field 'timestamp'", "finite")),
    ],
)
def test_bad_values_name_the_row_and_field(
    tmp_path: Path, body: str, expected: tuple[str, ...]
) -> None:
    _fails(_write(tmp_path, "req.csv", REQ_HEADER + body), *expected)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    f = _write(tmp_path, "req.csv", "timestamp,prompt_tokens,out\n1,2,3\n")
    _fails(f, "field 'output_tokens'", "missing column", fmt="requests")


def test_an_empty_file_is_reported(tmp_path: Path) -> None:
    _fails(_write(tmp_path, "empty.csv", ""), "empty")
    _fails(_write(tmp_path, "empty.csv", ""), "empty", fmt="requests")
    _fails(_write(tmp_path, "empty.jsonl", ""), "empty")


def test_a_header_without_rows_is_reported(tmp_path: Path) -> None:
    _fails(_write(tmp_path, "req.csv", REQ_HEADER), "no data rows")


def test_an_unparseable_csv_is_reported(tmp_path: Path) -> None:
    _fails(_write(tmp_path, "req.csv", REQ_HEADER + "1,2,3\n4,5,6,7,8\n"), "cannot parse as CSV")


def test_a_binary_file_is_not_a_trace(tmp_path: Path) -> None:
    f = tmp_path / "blob.csv"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    _fails(f, "not a text file")
    _fails(f, "not a text file", fmt="requests")


def test_a_file_of_another_format_is_reported(tmp_path: Path) -> None:
    f = _write(tmp_path, "req.csv", REQ_HEADER + "1,2,3\n")
    _fails(f, "field 'TIMESTAMP'", "missing column", fmt="azure")
    _fails(f, "not a ServeGen file", fmt="servegen")


def test_an_unknown_header_asks_for_the_format(tmp_path: Path) -> None:
    _fails(
        _write(tmp_path, "x.csv", "a,b\n1,2\n"), "cannot tell the trace format", "azure, servegen"
    )


def test_an_unknown_format_name_lists_the_known_ones(tmp_path: Path) -> None:
    _fails(
        _write(tmp_path, "req.csv", REQ_HEADER + "1,2,3\n"),
        "unknown format 'csv'",
        "jsonl",
        fmt="csv",
    )


def test_a_missing_file_and_a_directory_are_reported(tmp_path: Path) -> None:
    _fails(tmp_path / "nope.csv", "file not found")
    (tmp_path / "dir.csv").mkdir()
    _fails(tmp_path / "dir.csv", "is a directory")


def test_a_nonpositive_interval_is_rejected(tmp_path: Path) -> None:
    f = _write(tmp_path, "req.csv", REQ_HEADER + "1,2,3\n")
    _fails(f, "field 'interval_s'", interval_s=0.0)


def test_a_bad_azure_timestamp_names_the_row(tmp_path: Path) -> None:
    body = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.3120000,10,2\nyesterday,11,3\n"
    _fails(_write(tmp_path, "az.csv", body), "row 2", "field 'TIMESTAMP'", "'yesterday'")


def test_unsorted_azure_timestamps_name_the_row(tmp_path: Path) -> None:
    body = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.3120000,10,2\n2023-11-16 18:17:05.0000000,11,3\n2023-11-16 18:17:04.0000000,12,4\n"
    )
    _fails(_write(tmp_path, "az.csv", body), "row 3", "field 'TIMESTAMP'", "sorted")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            '{"timestamp": 0, "input_length": 1, "output_length": 1}\n{"timestamp": 5, "input_len',
            ("line 2", "not valid JSON"),
        ),
        ('{"timestamp": 0, "input_length": 1}\n', ("line 1", "field 'output_length'", "missing")),
        (
            '{"timestamp": 0, "input_length": -1, "output_length": 1}\n',
            ("line 1", "field 'input_length'", ">= 0"),
        ),
        (
            '{"timestamp": "x", "input_length": 1, "output_length": 1}\n',
            ("line 1", "field 'timestamp'", "'x'"),
        ),
        (
            '{"timestamp": null, "input_length": 1, "output_length": 1}\n',
            ("line 1", "field 'timestamp'"),
        ),
        (
            '{"timestamp": 9, "input_length": 1, "output_length": 1}\n{"timestamp": 3, "input_length": 1, "output_length": 1}\n',
            ("line 2", "sorted"),
        ),
        ("[1, 2, 3]\n", ("line 1", "JSON object")),
    ],
)
def test_bad_jsonl_names_the_line_and_field(
    tmp_path: Path, lines: str, expected: tuple[str, ...]
) -> None:
    _fails(_write(tmp_path, "t.jsonl", lines), *expected)


def test_a_corrupt_parquet_is_reported(tmp_path: Path) -> None:
    _fails(_write(tmp_path, "t.parquet", "not parquet at all"), "cannot read as Parquet")


def test_a_bad_servegen_family_names_the_row(tmp_path: Path) -> None:
    body = (
        "client_id,window_start_s,rate_rps,iat_cv,iat_family,iat_shape,iat_scale\n"
        "0,0,1.0,1.2,Gamma,0.7,1.0\n1,0,1.0,1.2,Pareto,0.7,1.0\n"
    )
    _fails(_write(tmp_path, "x_clients_10min.csv", body), "row 2", "field 'iat_family'", "Pareto")


def test_a_servegen_window_off_the_10_minute_grid_names_the_row(tmp_path: Path) -> None:
    body = "window_start_s,total_rate_rps,is_gap\n0,1.0,0\n650,1.0,0\n"
    _fails(
        _write(tmp_path, "x_total_10min.csv", body),
        "row 2",
        "field 'window_start_s'",
        "multiple of 600",
    )


def test_a_servegen_totals_file_of_only_gaps_is_reported(tmp_path: Path) -> None:
    body = "window_start_s,total_rate_rps,is_gap\n0,0,1\n600,0,1\n"
    _fails(_write(tmp_path, "x_total_10min.csv", body), "every window is a gap")


def test_a_negative_servegen_rate_names_the_row(tmp_path: Path) -> None:
    body = "client_id,window_start_s,rate_rps,iat_cv,iat_family,iat_shape,iat_scale\n0,0,-1.0,1.2,Gamma,0.7,1.0\n"
    _fails(_write(tmp_path, "x_clients_10min.csv", body), "row 1", "field 'rate_rps'", ">= 0")


def test_rate_files_need_increasing_timestamps_and_two_rows(tmp_path: Path) -> None:
    _fails(_write(tmp_path, "r.csv", "timestamp,rps\n0,1\n60,2\n60,3\n"), "row 3", "increasing")
    _fails(_write(tmp_path, "r.csv", "timestamp,rps\n0,1\n"), "at least 2 rows")
