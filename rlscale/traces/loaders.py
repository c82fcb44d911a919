"""Read request traces into a `Workload`: one entry point, `load_workload`, for every format.

Formats (`fmt`, or detected from the extension and the header):

| fmt        | file                                                               | time axis              |
|------------|--------------------------------------------------------------------|------------------------|
| `azure`    | Azure LLM 2023 CSV: `TIMESTAMP`, `ContextTokens`, `GeneratedTokens` | Unix seconds (UTC)     |
| `servegen` | ServeGen `*_clients_10min.csv` or `*_total_10min.csv` (see servegen.py) | seconds since midnight |
| `jsonl`    | one JSON object a line: `timestamp` (ms), `input_length`, `output_length` | as given (ms / 1000) |
| `requests` | CSV or Parquet: `timestamp` (s, Unix or relative), `prompt_tokens`, `output_tokens` | as given |
| `rate`     | CSV `timestamp, rps`: piecewise-constant rate, Poisson counts per bin | as given            |
| `workload` | Parquet (or CSV) written by `save_workload` / `rlscale traces convert` / `rlscale traces export` | as stored |

A `workload` file may carry `is_gap` (0/1) and `gap_reason` columns (`rlscale traces export`
writes them): gap bins may have empty values and are filled as ServeGen's gap windows are, with
the filled bins listed in `meta['gap_bin_starts_s']` (see `workload_from_columns`).

Per-request formats bin arrivals into `interval_s` bins starting at the first request's bin
(`floor(t0 / interval_s) * interval_s`, so bins line up with the clock), set each bin's sizes to
the request-weighted mean (the workload mean where a bin is empty) and the `*_cv` from all
requests. Every problem with the input is an `InputError` naming the file, the row (1-based data
row; line for JSONL), the field and what was expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlscale.errors import InputError
from rlscale.traces.workload import Workload

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("azure", "servegen", "jsonl", "requests", "rate", "workload")

# Request sizes for formats that carry none (ServeGen, rate files): the Azure LLM 2023 *conv*
# trace (19,366 requests): prompt mean 1,154.7 tokens (CV 0.960), output mean 211.1 (CV 0.771),
# computed from ../shared/data/azure_llm_2023_conv.csv (population std / mean).
DEFAULT_PROMPT_TOKENS = 1155.0
DEFAULT_OUTPUT_TOKENS = 211.0
DEFAULT_PROMPT_TOKENS_CV = 0.96
DEFAULT_OUTPUT_TOKENS_CV = 0.77

WORKLOAD_META_KEY = b"rlscale.workload"

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_REQUEST_COLUMNS = ("timestamp", "prompt_tokens", "output_tokens")
_JSONL_FIELDS = ("timestamp", "input_length", "output_length")
_WORKLOAD_COLUMNS = ("bin_start_s", "arrivals", "prompt_tokens", "output_tokens")
# optional: bins that are collection gaps (values may be empty there), and why
_GAP_COLUMNS = ("is_gap", "gap_reason")


def load_workload(
    path: str | Path,
    fmt: str | None = None,
    *,
    interval_s: float | None = None,
    seed: int = 0,
    name: str | None = None,
    prompt_tokens: float | None = None,
    output_tokens: float | None = None,
    prompt_tokens_cv: float | None = None,
    output_tokens_cv: float | None = None,
) -> Workload:
    """Load any supported trace as a `Workload` binned at `interval_s` seconds.

    `interval_s=None` means 1 s, except for `workload` files, which keep their stored bins.
    `seed` drives the formats that sample counts (ServeGen, rate). The size keywords are the
    request sizes of formats that carry none (ServeGen, rate); they default to the Azure conv
    statistics (`DEFAULT_*`) and are ignored by formats with per-request sizes.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(str(p), "file not found")
    if p.is_dir():
        raise InputError(str(p), "is a directory, expected a trace file")
    if interval_s is not None and not (math.isfinite(interval_s) and interval_s > 0):
        raise InputError(
            str(p), f"expected a bin width > 0 seconds, got {interval_s}", field="interval_s"
        )
    fmt = detect_format(p) if fmt is None else _check_format_name(fmt, p)
    sizes = _Sizes(
        prompt=_default(prompt_tokens, DEFAULT_PROMPT_TOKENS, "prompt_tokens", p),
        output=_default(output_tokens, DEFAULT_OUTPUT_TOKENS, "output_tokens", p),
        prompt_cv=_default(prompt_tokens_cv, DEFAULT_PROMPT_TOKENS_CV, "prompt_tokens_cv", p),
        output_cv=_default(output_tokens_cv, DEFAULT_OUTPUT_TOKENS_CV, "output_tokens_cv", p),
    )
    if fmt == "workload":
        w = _load_workload_file(p, name_override=name)
        return w if interval_s is None else w.rebin(interval_s)
    name = name or _default_name(p)
    step = 1.0 if interval_s is None else float(interval_s)
    if fmt == "servegen":
        from rlscale.traces.servegen import load_servegen

        return load_servegen(
            p,
            interval_s=step,
            seed=seed,
            name=name,
            prompt_tokens=sizes.prompt,
            output_tokens=sizes.output,
            prompt_tokens_cv=sizes.prompt_cv,
            output_tokens_cv=sizes.output_cv,
        )
    if fmt == "azure":
        return _load_azure(p, step, name)
    if fmt == "jsonl":
        return _load_jsonl(p, step, name)
    if fmt == "requests":
        return _load_requests(p, step, name)
    return _load_rate(p, step, seed, name, sizes)


def detect_format(path: str | Path) -> str:
    """The format name of `path`, from its extension and (for CSV) its header line."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if ext in (".parquet", ".pq"):
        columns, meta = _parquet_schema(p)
        if (meta and WORKLOAD_META_KEY in meta) or {"bin_start_s", "arrivals"} <= set(columns):
            return "workload"
        return "requests"
    columns = _csv_header(p)
    found = _format_from_columns(columns)
    if found is None:
        raise InputError(
            str(p),
            f"cannot tell the trace format from the header {columns[:8]}; "
            f"pass the format explicitly (one of {', '.join(FORMATS)})",
        )
    return found


def save_workload(w: Workload, path: str | Path) -> Path:
    """Write `w` as Parquet (`bin_start_s, arrivals, prompt_tokens, output_tokens`, the rest in
    the schema metadata) so that `load_workload(path)` gives it back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    table = pa.table(
        {
            "bin_start_s": w.start_s + w.interval_s * np.arange(w.n_bins, dtype=float),
            "arrivals": np.asarray(w.arrivals, dtype=float),
            "prompt_tokens": np.asarray(w.prompt_tokens, dtype=float),
            "output_tokens": np.asarray(w.output_tokens, dtype=float),
        }
    )
    header = {
        "name": w.name,
        "source": w.source,
        "interval_s": w.interval_s,
        "start_s": w.start_s,
        "prompt_tokens_cv": w.prompt_tokens_cv,
        "output_tokens_cv": w.output_tokens_cv,
        "meta": w.meta,
    }
    blob = json.dumps(header, default=_json_default).encode()
    table = table.replace_schema_metadata({WORKLOAD_META_KEY: blob})
    pq.write_table(table, p)
    return p


def bin_requests(
    t_s: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    *,
    interval_s: float,
    name: str,
    source: str,
    meta: dict[str, Any] | None = None,
) -> Workload:
    """Bin sorted request times (seconds) with their sizes into a `Workload`."""
    t = np.asarray(t_s, dtype=float)
    prompt = np.asarray(prompt, dtype=float)
    output = np.asarray(output, dtype=float)
    start = math.floor(t[0] / interval_s) * interval_s
    idx = np.maximum(np.floor((t - start) / interval_s).astype(np.int64), 0)
    n_bins = int(idx[-1]) + 1
    arrivals = np.bincount(idx, minlength=n_bins).astype(float)
    means = []
    for sizes in (prompt, output):
        total = np.bincount(idx, weights=sizes, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(np.where(arrivals > 0, total / arrivals, float(sizes.mean())))
    return Workload(
        name=name,
        source=source,
        interval_s=float(interval_s),
        arrivals=arrivals,
        prompt_tokens=means[0],
        output_tokens=means[1],
        start_s=float(start),
        prompt_tokens_cv=_cv(prompt),
        output_tokens_cv=_cv(output),
        meta={
            "requests": int(len(t)),
            "first_request_s": float(t[0]),
            "last_request_s": float(t[-1]),
            **(meta or {}),
        },
    )


class _Sizes:
    def __init__(self, prompt: float, output: float, prompt_cv: float, output_cv: float) -> None:
        self.prompt, self.output, self.prompt_cv, self.output_cv = (
            prompt,
            output,
            prompt_cv,
            output_cv,
        )


def _default(value: float | None, default: float, field: str, where: Path) -> float:
    if value is None:
        return default
    if not (math.isfinite(value) and value >= 0):
        raise InputError(str(where), f"expected a number >= 0, got {value}", field=field)
    return float(value)


def _default_name(p: Path) -> str:
    name = p.name
    for suffix in (".csv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def _check_format_name(fmt: str, where: Path) -> str:
    f = fmt.strip().lower()
    if f not in FORMATS:
        raise InputError(
            str(where),
            f"unknown format {fmt!r}, expected one of {', '.join(FORMATS)}",
            field="format",
        )
    return f


def _format_from_columns(columns: Sequence[str]) -> str | None:
    cols = set(columns)
    if set(_AZURE_COLUMNS) <= cols:
        return "azure"
    if {"client_id", "window_start_s", "rate_rps"} <= cols or {
        "window_start_s",
        "total_rate_rps",
    } <= cols:
        return "servegen"
    if {"bin_start_s", "arrivals"} <= cols:
        return "workload"
    if "timestamp" in cols and {"prompt_tokens", "output_tokens"} & cols:
        return "requests"
    if "timestamp" in cols and {"rps", "rate_rps"} & cols:
        return "rate"
    return None


def _csv_header(p: Path) -> list[str]:
    try:
        with p.open("r", encoding="utf-8-sig") as fh:
            line = fh.readline()
    except UnicodeDecodeError:
        raise InputError(
            str(p), "not a text file, expected a CSV, JSONL or Parquet trace"
        ) from None
    except OSError as e:
        raise InputError(str(p), f"cannot read: {e.strerror or e}") from None
    if not line.strip():
        raise InputError(str(p), "file is empty, expected a header line and data rows")
    return [c.strip() for c in line.strip().split(",")]


def _read_csv(
    p: Path, required: Sequence[str], *, dtype: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Read a CSV with pandas, turning every pandas complaint into a one-line `InputError`."""
    import pandas as pd

    try:
        df = pd.read_csv(p, dtype=dtype, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise InputError(str(p), "file is empty, expected a header line and data rows") from None
    except pd.errors.ParserError as e:
        raise InputError(str(p), f"cannot parse as CSV: {_first_line(e)}") from None
    except UnicodeDecodeError:
        raise InputError(str(p), "not a text file, expected CSV") from None
    except (ValueError, TypeError) as e:
        raise InputError(str(p), f"cannot parse as CSV: {_first_line(e)}") from None
    df.columns = [str(c).strip() for c in df.columns]
    check_columns(df.columns, required, p)
    if len(df) == 0:
        raise InputError(str(p), "no data rows after the header")
    return df


def check_columns(columns: Sequence[str], required: Sequence[str], where: Path | str) -> None:
    have = list(columns)
    for col in required:
        if col not in have:
            raise InputError(str(where), f"missing column, the header has {have[:10]}", field=col)


def numeric_column(
    df: pd.DataFrame,
    col: str,
    where: Path | str,
    *,
    min_value: float | None = 0.0,
    allow_missing: np.ndarray | None = None,
    row_label: str = "row",
) -> np.ndarray:
    """Column `col` as float64; empty, non-numeric, infinite or (below `min_value`) values raise an
    `InputError` naming the first bad 1-based data row. `allow_missing` marks rows that may be
    empty (they come back as NaN)."""
    import pandas as pd

    raw = df[col]
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(vals)
    if allow_missing is not None:
        bad &= ~(allow_missing & np.isnan(vals) & raw.isna().to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        got = raw.iloc[i]
        if got is None or (isinstance(got, float) and math.isnan(got)) or str(got).strip() == "":
            problem = "expected a number, got an empty value"
        else:
            problem = f"expected a finite number, got {str(got)!r}"
        raise _row_error(where, problem, i + 1, col, row_label)
    if min_value is not None:
        low = vals < min_value
        if low.any():
            i = int(np.flatnonzero(low)[0])
            raise _row_error(
                where, f"expected a number >= {min_value:g}, got {vals[i]:g}", i + 1, col, row_label
            )
    return vals


def check_sorted(
    t: np.ndarray, col: str, where: Path | str, *, row_label: str = "row", strict: bool = False
) -> None:
    """Timestamps must not go back in time (`strict`: must increase)."""
    step = np.diff(t)
    bad = step <= 0 if strict else step < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0]) + 1
        order = "increasing" if strict else "sorted ascending"
        raise _row_error(
            where,
            f"timestamps must be {order}: {t[i]:g} comes after {t[i - 1]:g}",
            i + 1,
            col,
            row_label,
        )


def _row_error(where: Path | str, problem: str, row: int, col: str, row_label: str) -> InputError:
    if row_label == "row":
        return InputError(str(where), problem, row=row, field=col)
    return InputError(f"{where}: {row_label} {row}", problem, field=col)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _cv(x: np.ndarray) -> float:
    m = float(np.mean(x))
    return float(np.std(x) / m) if m > 0 else 0.0


def read_azure_requests(p: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every request of an Azure LLM 2023 CSV: (arrival time in Unix seconds, prompt tokens,
    output tokens), checked row by row. The request-level engine replays these as they are."""
    import pandas as pd

    df = _read_csv(p, _AZURE_COLUMNS, dtype={"TIMESTAMP": str})
    raw = df["TIMESTAMP"]
    ts = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        got = raw.iloc[i]
        shown = "an empty value" if not isinstance(got, str) or not got.strip() else repr(got)
        raise InputError(
            str(p),
            f"expected a time like '2023-11-16 18:17:03.3120000', got {shown}",
            row=i + 1,
            field="TIMESTAMP",
        )
    t = ts.astype("int64").to_numpy() / 1e9
    check_sorted(t, "TIMESTAMP", p)
    return t, numeric_column(df, "ContextTokens", p), numeric_column(df, "GeneratedTokens", p)


def _load_azure(p: Path, interval_s: float, name: str) -> Workload:
    t, prompt, output = read_azure_requests(p)
    return bin_requests(
        t, prompt, output, interval_s=interval_s, name=name, source=str(p), meta={"format": "azure"}
    )


def _load_requests(p: Path, interval_s: float, name: str) -> Workload:
    if p.suffix.lower() in (".parquet", ".pq"):
        df = _read_parquet(p, _REQUEST_COLUMNS)
    else:
        df = _read_csv(p, _REQUEST_COLUMNS)
    t = numeric_column(df, "timestamp", p, min_value=None)
    check_sorted(t, "timestamp", p)
    prompt = numeric_column(df, "prompt_tokens", p)
    output = numeric_column(df, "output_tokens", p)
    return bin_requests(
        t,
        prompt,
        output,
        interval_s=interval_s,
        name=name,
        source=str(p),
        meta={"format": "requests"},
    )


def _load_jsonl(p: Path, interval_s: float, name: str) -> Workload:
    t: list[float] = []
    last_ms = -math.inf
    sizes: tuple[list[float], list[float]] = ([], [])
    try:
        fh = p.open("r", encoding="utf-8")
    except OSError as e:
        raise InputError(str(p), f"cannot read: {e.strerror or e}") from None
    with fh:
        try:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{p}: line {line_no}", f"not valid JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise InputError(f"{p}: line {line_no}", "expected a JSON object per line")
                values = []
                for field in _JSONL_FIELDS:
                    if field not in rec:
                        raise InputError(f"{p}: line {line_no}", "missing field", field=field)
                    v = rec[field]
                    if (
                        isinstance(v, bool)
                        or not isinstance(v, int | float)
                        or not math.isfinite(v)
                    ):
                        raise InputError(
                            f"{p}: line {line_no}", f"expected a number, got {v!r}", field=field
                        )
                    if v < 0:
                        raise InputError(
                            f"{p}: line {line_no}",
                            f"expected a number >= 0, got {v!r}",
                            field=field,
                        )
                    values.append(float(v))
                if values[0] < last_ms:
                    raise InputError(
                        f"{p}: line {line_no}",
                        f"timestamps must be sorted ascending: {values[0]:g} ms comes after {last_ms:g} ms",
                        field="timestamp",
                    )
                last_ms = values[0]
                t.append(values[0] / 1000.0)
                sizes[0].append(values[1])
                sizes[1].append(values[2])
        except UnicodeDecodeError:
            raise InputError(str(p), "not a text file, expected JSONL") from None
    if not t:
        raise InputError(str(p), "file is empty, expected one JSON object per line")
    return bin_requests(
        np.array(t),
        np.array(sizes[0]),
        np.array(sizes[1]),
        interval_s=interval_s,
        name=name,
        source=str(p),
        meta={"format": "jsonl"},
    )


def _load_rate(p: Path, interval_s: float, seed: int, name: str, sizes: _Sizes) -> Workload:
    df = _read_csv(p, ("timestamp",))
    rate_col = "rps" if "rps" in df.columns else "rate_rps" if "rate_rps" in df.columns else None
    if rate_col is None:
        raise InputError(
            str(p), f"missing column, the header has {list(df.columns)[:10]}", field="rps"
        )
    t = numeric_column(df, "timestamp", p, min_value=None)
    rps = numeric_column(df, rate_col, p)
    if len(t) < 2:
        raise InputError(
            str(p), "expected at least 2 rows: the last rate lasts as long as the step before it"
        )
    check_sorted(t, "timestamp", p, strict=True)
    # Rate k holds on [t_k, t_k+1); the last one for as long as the step before it.
    knots = np.append(t, t[-1] + (t[-1] - t[-2]))
    cum = np.concatenate([[0.0], np.cumsum(rps * np.diff(knots))])
    start = math.floor(t[0] / interval_s) * interval_s
    n_bins = max(1, math.ceil((knots[-1] - start) / interval_s - 1e-9))
    edges = start + interval_s * np.arange(n_bins + 1)
    expected = np.diff(np.interp(edges, knots, cum))
    rng = np.random.default_rng(seed)
    arrivals = rng.poisson(np.maximum(expected, 0.0)).astype(float)
    return Workload(
        name=name,
        source=str(p),
        interval_s=float(interval_s),
        arrivals=arrivals,
        prompt_tokens=np.full(n_bins, sizes.prompt),
        output_tokens=np.full(n_bins, sizes.output),
        start_s=float(start),
        prompt_tokens_cv=sizes.prompt_cv,
        output_tokens_cv=sizes.output_cv,
        meta={
            "format": "rate",
            "seed": seed,
            "expected_requests": float(cum[-1]),
            "sizes": "defaults",
        },
    )


def _parquet_schema(p: Path) -> tuple[list[str], dict[bytes, bytes] | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(p)
    except (pa.ArrowException, OSError) as e:
        raise InputError(str(p), f"cannot read as Parquet: {_first_line(e)}") from None
    return list(schema.names), schema.metadata


def _read_parquet(p: Path, required: Sequence[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns, _ = _parquet_schema(p)
    check_columns(columns, required, p)
    try:
        df = pq.read_table(p, columns=list(required)).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise InputError(str(p), f"cannot read as Parquet: {_first_line(e)}") from None
    if len(df) == 0:
        raise InputError(str(p), "no data rows")
    return df


def _load_workload_file(p: Path, name_override: str | None) -> Workload:
    header: dict[str, Any] = {}
    if p.suffix.lower() in (".parquet", ".pq"):
        columns, schema_meta = _parquet_schema(p)
        extra = tuple(c for c in _GAP_COLUMNS if c in columns)
        df = _read_parquet(p, (*_WORKLOAD_COLUMNS, *extra))
        if schema_meta and WORKLOAD_META_KEY in schema_meta:
            try:
                header = json.loads(schema_meta[WORKLOAD_META_KEY])
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise InputError(
                    str(p), "the rlscale.workload metadata is not valid JSON"
                ) from None
    else:
        df = _read_csv(p, _WORKLOAD_COLUMNS)
    gap = None
    if "is_gap" in df.columns:
        gap = numeric_column(df, "is_gap", p)
        bad = ~np.isin(gap, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(str(p), f"expected 0 or 1, got {gap[i]:g}", row=i + 1, field="is_gap")
        gap = gap > 0
    bin_start = numeric_column(df, "bin_start_s", p, min_value=None)
    arrivals = numeric_column(df, "arrivals", p, allow_missing=gap)
    prompt = numeric_column(df, "prompt_tokens", p, allow_missing=gap)
    output = numeric_column(df, "output_tokens", p, allow_missing=gap)
    check_sorted(bin_start, "bin_start_s", p, strict=True)
    if "interval_s" in header:
        interval_s = float(header["interval_s"])
    elif len(bin_start) > 1:
        interval_s = float(bin_start[1] - bin_start[0])
    else:
        raise InputError(
            str(p), "one bin and no metadata: cannot tell the bin width", field="interval_s"
        )
    steps = np.diff(bin_start)
    if len(steps) and not np.allclose(steps, interval_s, rtol=1e-6, atol=1e-6):
        i = int(np.flatnonzero(~np.isclose(steps, interval_s, rtol=1e-6, atol=1e-6))[0]) + 1
        raise InputError(
            str(p),
            f"bins must be evenly spaced {interval_s:g} s apart",
            row=i + 1,
            field="bin_start_s",
        )
    if gap is not None and gap.all():
        raise InputError(
            str(p), "every bin is a gap (is_gap = 1): no traffic to load", field="is_gap"
        )
    reasons = (
        [str(r) if isinstance(r, str) else "" for r in df["gap_reason"]]
        if "gap_reason" in df.columns
        else None
    )
    return workload_from_columns(
        bin_start,
        arrivals,
        prompt,
        output,
        gap,
        name=name_override or str(header.get("name") or _default_name(p)),
        source=str(header.get("source") or p),
        interval_s=interval_s,
        start_s=float(header.get("start_s", bin_start[0])),
        prompt_tokens_cv=float(header.get("prompt_tokens_cv", 1.0)),
        output_tokens_cv=float(header.get("output_tokens_cv", 1.0)),
        meta=dict(header.get("meta") or {}),
        gap_reason=reasons,
    )


def workload_from_columns(
    bin_start_s: np.ndarray,
    arrivals: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    is_gap: np.ndarray | None,
    *,
    name: str,
    source: str,
    interval_s: float,
    start_s: float | None = None,
    prompt_tokens_cv: float = 1.0,
    output_tokens_cv: float = 1.0,
    meta: dict[str, Any] | None = None,
    gap_reason: Sequence[str] | None = None,
) -> Workload:
    """A `Workload` from the `workload` format's columns. Bins marked `is_gap` (values may be
    NaN) are filled as ServeGen's gap windows are (`servegen.fill_gaps`: the same time a day
    earlier or later, scaled to the neighbours, else linear between them; sizes linear between
    the neighbours), and listed in `meta`: `gaps_masked`, `gap_bin_starts_s`, `gap_fill` and,
    with `gap_reason`, `gap_reasons` (count per reason)."""
    meta = dict(meta or {})
    arrivals = np.asarray(arrivals, dtype=float).copy()
    prompt = np.asarray(prompt_tokens, dtype=float).copy()
    output = np.asarray(output_tokens, dtype=float).copy()
    if is_gap is not None and np.any(is_gap):
        from rlscale.traces.servegen import fill_gaps

        gap = np.asarray(is_gap, dtype=bool)
        per_day = 86_400.0 / interval_s
        day = int(round(per_day)) if abs(per_day - round(per_day)) < 1e-6 else 10**12
        arrivals = np.maximum(fill_gaps(np.where(gap, 0.0, arrivals), gap, per_day=day), 0.0)
        idx = np.arange(len(gap))
        for sizes in (prompt, output):
            sizes[gap] = np.interp(idx[gap], idx[~gap], sizes[~gap])
        meta["gaps_masked"] = int(gap.sum())
        meta["gap_bin_starts_s"] = np.asarray(bin_start_s, dtype=float)[gap].tolist()
        meta["gap_fill"] = (
            "same time a day earlier (else later), scaled to the neighbours; else linear"
        )
        if gap_reason is not None:
            counts: dict[str, int] = {}
            for r, g in zip(gap_reason, gap, strict=True):
                if g:
                    counts[r or "unspecified"] = counts.get(r or "unspecified", 0) + 1
            meta["gap_reasons"] = counts
    elif is_gap is not None:
        meta["gaps_masked"] = 0
    return Workload(
        name=name,
        source=source,
        interval_s=interval_s,
        arrivals=arrivals,
        prompt_tokens=prompt,
        output_tokens=output,
        start_s=float(bin_start_s[0] if start_s is None else start_s),
        prompt_tokens_cv=prompt_tokens_cv,
        output_tokens_cv=output_tokens_cv,
        meta=meta,
    )


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
