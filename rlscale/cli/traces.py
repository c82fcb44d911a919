"""Subcommands of this area (registered into `rlscale` by rlscale.cli.commands):
`rlscale traces inspect PATH`, `rlscale traces convert PATH OUT.parquet` and
`rlscale traces export --prometheus URL --selector SEL --start T --out OUT.parquet`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rlscale.cli import options as opts

if TYPE_CHECKING:
    from rlscale.traces.workload import Workload


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`. Import heavy modules inside each command."""
    traces = typer.Typer(
        name="traces",
        help="Inspect, convert and export (from Prometheus) request traces.",
        no_args_is_help=True,
    )

    @traces.command("inspect")
    def inspect(
        path: opts.TraceArgument,
        fmt: opts.TraceFormat = None,
        interval_s: Annotated[
            float | None,
            typer.Option(
                "--interval-s",
                help="Bin width in seconds (default 1; stored bins for workload files).",
            ),
        ] = None,
        seed: Annotated[
            int,
            typer.Option("--seed", help="Seed for formats that sample counts (servegen, rate)."),
        ] = 0,
    ) -> None:
        """Print a summary: requests, span, rates at 1 s and 1 min, peak/trough, sizes, gaps."""
        from rich.console import Console
        from rich.table import Table

        w = opts.load_trace(path, fmt, interval_s=interval_s, seed=seed)
        table = Table(title=f"{w.name}  ({w.meta.get('format', '?')})", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        for key, value in summarize(w).items():
            table.add_row(key, value)
        Console().print(table)

    @traces.command("convert")
    def convert(
        path: opts.TraceArgument,
        out: Annotated[Path, typer.Argument(help="Output .parquet (binned workload).")],
        fmt: opts.TraceFormat = None,
        interval_s: Annotated[
            float | None, typer.Option("--interval-s", help="Bin width in seconds (default 1).")
        ] = None,
        seed: Annotated[
            int,
            typer.Option("--seed", help="Seed for formats that sample counts (servegen, rate)."),
        ] = 0,
        name: Annotated[
            str | None, typer.Option("--name", help="Workload name (default: file name).")
        ] = None,
        prompt_scale: Annotated[
            float,
            typer.Option(
                "--prompt-scale",
                help="Multiply every prompt size by this (10: a long-context variant).",
            ),
        ] = 1.0,
    ) -> None:
        """Write the binned workload as Parquet, readable back as format `workload`.

        Columns bin_start_s, arrivals, prompt_tokens, output_tokens; the rest in the metadata.
        """
        from rlscale.errors import InputError
        from rlscale.traces.loaders import save_workload

        if out.suffix.lower() not in (".parquet", ".pq"):
            raise InputError(str(out), "expected an output path ending in .parquet")
        w = opts.load_trace(path, fmt, interval_s=interval_s, seed=seed, name=name)
        if prompt_scale != 1.0:
            from rlscale.traces.transforms import scale_prompts

            w = scale_prompts(w, prompt_scale)
        save_workload(w, out)
        typer.echo(
            f"wrote {out}: {w.n_bins:,} bins of {w.interval_s:g} s, {w.total_requests:,.0f} requests"
        )

    @traces.command("export")
    def export(
        prometheus: Annotated[
            str, typer.Option("--prometheus", help="Prometheus base URL (http://host:9090).")
        ],
        start: Annotated[
            str, typer.Option("--start", help="Unix seconds, RFC 3339, or now-<duration>.")
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output .parquet or .csv.")],
        deployment: Annotated[
            str | None,
            typer.Option(
                "--deployment",
                help="The service's Deployment: its pods as the controller selects them "
                "(namespace and pod name <deployment>-<hash>-<suffix>).",
            ),
        ] = None,
        namespace: Annotated[
            str, typer.Option("--namespace", "-n", help="With --deployment.")
        ] = "default",
        selector: Annotated[
            str | None,
            typer.Option(
                "--selector",
                help="Instead of --deployment: PromQL label matchers for the service's vLLM "
                'pods, e.g. \'namespace="prod",pod=~"llm-.*"\'',
            ),
        ] = None,
        end: Annotated[str, typer.Option("--end", help="As --start (default now).")] = "now",
        step_s: Annotated[
            float, typer.Option("--step-s", help="Bin width in seconds (several scrapes).")
        ] = 60.0,
        max_scrape_gap_s: Annotated[
            float | None,
            typer.Option(
                "--max-scrape-gap-s",
                help="A series silent longer than this is a gap (default 2.5 scrape intervals).",
            ),
        ] = None,
        name: Annotated[
            str | None, typer.Option("--name", help="Workload name (default: file name).")
        ] = None,
        bearer_token_file: Annotated[
            Path | None, typer.Option("--bearer-token-file", help="Token for Prometheus.")
        ] = None,
        timeout_s: Annotated[
            float, typer.Option("--timeout-s", help="Per-request timeout (s).")
        ] = 30.0,
    ) -> None:
        """Export request rate and mean prompt/output tokens per step from vLLM's series in
        Prometheus as a `workload` trace (Parquet or CSV) every command reads.

        Steps with a scrape gap, a counter reset or no series are marked (is_gap = 1,
        gap_reason) and left empty; loading the file fills them and lists them.
        """
        import time

        import numpy as np

        from rlscale.deploy.export import (
            ExportRequest,
            PrometheusRaw,
            export_trace,
            parse_time,
            write_trace,
        )
        from rlscale.errors import InputError

        if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
            raise InputError(str(out), "expected an output path ending in .parquet or .csv")
        if (selector is None) == (deployment is None):
            raise InputError("--selector", "give either --deployment or --selector")
        if selector is None:
            from rlscale.deploy.promql import DEFAULT_SELECTOR, render

            selector = render(
                DEFAULT_SELECTOR, {"namespace": namespace, "deployment": str(deployment)}
            )
        now = time.time()
        req = ExportRequest(
            selector=selector,
            start_s=parse_time(start, "--start", now),
            end_s=parse_time(end, "--end", now),
            step_s=step_s,
            max_scrape_gap_s=max_scrape_gap_s,
            name=name or out.stem,
            source=prometheus,
        )
        reader = PrometheusRaw(
            prometheus,
            timeout_s=timeout_s,
            bearer_token_file=str(bearer_token_file) if bearer_token_file else None,
        )
        try:
            trace = export_trace(reader, req)
        finally:
            reader.close()
        write_trace(trace, out)
        gaps = trace.gap_counts()
        shown = ", ".join(f"{k} {v}" for k, v in gaps.items()) if gaps else "none"
        typer.echo(
            f"wrote {out}: {req.n_steps:,} steps of {req.step_s:g} s, "
            f"{float(np.nansum(trace.arrivals)):,.0f} requests, gap steps: {shown}"
        )

    app.add_typer(traces, name="traces")


def summarize(w: Workload) -> dict[str, str]:
    """The rows `inspect` prints, as text (also handy in notebooks and reports)."""
    import numpy as np

    rows: dict[str, Any] = {}
    rows["source"] = w.source
    rows["requests"] = f"{w.total_requests:,.0f}"
    rows["span"] = (
        f"{_duration(w.duration_s)} ({w.n_bins:,} bins of {w.interval_s:g} s), start {_start(w.start_s)}"
    )
    rows["mean rate"] = f"{w.total_requests / w.duration_s:,.2f} req/s"
    for label, width in (("1 s", 1.0), ("1 min", 60.0)):
        if width < w.interval_s * (1 - 1e-9) or width > w.duration_s:
            continue
        r = w.rebin(width)
        rows[f"peak rate ({label})"] = (
            f"{r.rate_rps.max():,.2f} req/s (p99 {np.quantile(r.rate_rps, 0.99):,.2f})"
        )
    if w.duration_s >= 2 * 600:
        ten = w.rebin(600).rate_rps[: int(w.duration_s // 600)]  # whole windows only
        lo, hi = float(ten.min()), float(ten.max())
        ratio = f"{hi / lo:,.1f}x" if lo > 0 else "n/a (a 10-min window with no requests)"
        rows["peak/trough (10-min means)"] = (
            f"{ratio}  ({hi:,.1f} / {lo:,.1f} req/s; p95/p5 {np.quantile(ten, 0.95) / max(np.quantile(ten, 0.05), 1e-12):,.1f}x)"
        )
    total = w.total_requests
    for label, sizes, cv in (
        ("prompt tokens", w.prompt_tokens, w.prompt_tokens_cv),
        ("output tokens", w.output_tokens, w.output_tokens_cv),
    ):
        mean = float((sizes * w.arrivals).sum() / total) if total > 0 else float(np.mean(sizes))
        rows[f"{label} (mean, CV)"] = f"{mean:,.0f}, {cv:.2f}"
    if "gap_bin_starts_s" in w.meta:
        reasons = w.meta.get("gap_reasons") or {}
        why = f" ({', '.join(f'{k} {v}' for k, v in reasons.items())})" if reasons else ""
        rows["gaps filled"] = f"{w.meta['gaps_masked']} bins flagged is_gap{why}"
    elif "gaps_masked" in w.meta:
        rows["gaps masked"] = (
            f"{w.meta['gaps_masked']} windows flagged is_gap, {w.meta.get('collapses_masked', 0)} collapsed windows"
        )
    if w.meta.get("transforms"):
        rows["transforms"] = ", ".join(t.get("op", "?") for t in w.meta["transforms"])
    return {k: str(v) for k, v in rows.items()}


def _duration(s: float) -> str:
    if s >= 2 * 86_400:
        return f"{s / 86_400:.2f} days"
    if s >= 2 * 3600:
        return f"{s / 3600:.2f} h"
    return f"{s / 60:.1f} min"


def _start(start_s: float) -> str:
    if start_s > 1e8:  # a calendar time
        from datetime import UTC, datetime

        return datetime.fromtimestamp(start_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{start_s:g} s after midnight"
