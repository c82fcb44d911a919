"""The evaluation report: `report.json`, `report.csv`, `report.md` and PNG plots in one folder.

`report.json` = {"meta": settings and provenance, "workloads": scaling per (profile, workload),
"policies": spec and limits per policy, "records": [...]}, one record per
policy x workload x profile x seed plus the aggregate (`"seed": "mean"`, with `<metric>_std`, the
standard deviation over seeds). `report.csv` holds the same records flat. With `--frontier`,
`report.json` gains "frontier" (the SLO point, the families, one row per (profile, workload,
family) and every point with its frontier membership), `report.md` a frontier section and the
plots a `frontier_<profile>_<workload>.png` per workload (`rlscale.evaluation.frontier`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.evaluation.evaluate import EvalResult
from rlscale.evaluation.frontier import FrontierReport

TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (record key, header, format)
    ("policy", "policy", "s"),
    ("gpu_hours", "GPU-h", ".1f"),
    ("cost_usd", "cost $", ".0f"),
    ("cost_vs_oracle", "x oracle", ".2f"),
    ("cost_vs_baseline", "x base", ".2f"),
    ("slo_attainment", "SLO %", "%"),
    ("ttft_p50_s", "TTFT p50", ".2f"),
    ("ttft_p95_s", "TTFT p95", ".2f"),
    ("ttft_p99_s", "TTFT p99", ".2f"),
    ("tpot_p95_s", "TPOT p95 ms", "ms"),
    ("dropped", "dropped", ".0f"),
    ("scale_events", "scale ev", ".0f"),
    ("cold_starts", "cold st", ".0f"),
    ("mean_replicas", "mean repl", ".1f"),
)
# report.md only: the console table keeps TABLE_COLUMNS (a 200-column CI log has no room)
PER_DAY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("scale_events_per_day", "scale ev/day", ".0f"),
    ("cold_starts_per_day", "cold st/day", ".0f"),
)
REPORT_COLUMNS = TABLE_COLUMNS + PER_DAY_COLUMNS
# report.md, where a policy ran under the run-time shield: intervals each kind of firing changed
# the proposal (`rlscale.serving.shield`)
SHIELD_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("shield_floor", "shield floor", ".0f"),
    ("shield_queue", "shield queue", ".0f"),
    ("shield_consolidation", "shield consol.", ".0f"),
    ("shield_handover", "shield hand-over", ".0f"),
)
FRONTIER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("policy", "family", "s"),
    ("on_frontier", "on frontier", "d"),
    ("slo_min", "SLO from %", "%"),
    ("slo_max", "SLO to %", "%"),
    ("cost@slo", "cost $ at SLO", ".1f"),
    ("cost@slo_vs_best_rule", "x best rule", ".3f"),
    ("cost@slo_vs_oracle", "x oracle", ".3f"),
    ("gap_closed@slo", "gap closed", ".2f"),
)


def fmt_value(v: Any, fmt: str, std: Any = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if fmt == "s":
        return str(v)
    if fmt == "d":
        return str(int(v))
    if fmt == "%":
        s = f"{100 * v:.2f}"
        return s + (f" ±{100 * std:.2f}" if std else "")
    if fmt == "ms":
        s = f"{1000 * v:.1f}"
        return s + (f" ±{1000 * std:.1f}" if std else "")
    s = format(v, fmt)
    return s + (f" ±{format(std, fmt)}" if std else "")


def _groups(result: EvalResult) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in result.aggregates():
        out.setdefault((r["profile"], r["workload"]), []).append(r)
    return out


def markdown(result: EvalResult) -> str:
    s = result.settings
    lines = [
        "# rlscale evaluation",
        "",
        f"Seeds {list(s.seeds)}; SLO: {s.config.slo.describe()}, "
        f"target attainment {100 * s.slo_target:g} %; baseline `{s.baseline}`; interval {s.config.interval_s:g} s; "
        f"workloads scaled so the p{100 * s.peak_quantile:g} minute needs {s.peak_replicas:g} replicas within the SLO; "
        f"every policy starts from the fleet the opening {s.opening_s / 60:g} minutes need. "
        "Mean ± standard deviation over seeds.",
        "",
    ]
    for (profile, workload), rows in _groups(result).items():
        info = result.workloads.get((profile, workload), {})
        lines += [f"## {workload} on {profile}", ""]
        if info:
            lines += [
                f"{info['duration_h']:.1f} h, mean {info['mean_rps']:.1f} req/s, peak minute {info['peak_1min_rps']:.1f} req/s, "
                f"replica capacity {info['slo_capacity_rps']:.1f} req/s within the SLO ({info['knee_capacity_rps']:.1f} at "
                f"the knee; prompt {info['mean_prompt_tokens']:.0f} / output {info['mean_output_tokens']:.0f} tokens); "
                f"starting fleet {info['opening_replicas']}.",
                "",
            ]
        shielded = any(r.get("shield") for r in rows)
        lines += _md_table(rows, REPORT_COLUMNS + (SHIELD_COLUMNS if shielded else ()))
        lines.append("")
    if result.frontier is not None:
        lines += frontier_markdown(result.frontier)
    lines.append(f"Evaluated in {result.elapsed_s:.1f} s.")
    return "\n".join(lines) + "\n"


def _md_table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str, str], ...]) -> list[str]:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |"]
    lines.append("|" + "|".join("---" if f == "s" else "---:" for _, _, f in columns) + "|")
    for r in rows:
        cells = (fmt_value(r.get(k), f, r.get(f"{k}_std")) for k, _, f in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def frontier_markdown(rep: FrontierReport) -> list[str]:
    """The frontier section: per workload the SLO point and every family's cost at it."""
    where = (
        f"SLO attainment {100 * rep.at_slo:g} %"
        if rep.at_slo is not None
        else f"the baseline `{rep.baseline}`'s SLO attainment"
    )
    lines = [
        "## Cost at equal SLO attainment (frontiers)",
        "",
        f"Each family's (SLO attainment, cost) points, averaged over seeds, reduced to their Pareto "
        f"frontier and read at {where} by linear interpolation between neighbouring points; '-' "
        "where that attainment is outside a family's frontier (never extrapolated). A plain policy "
        "is a one-point family. x best rule / x oracle: against the cheapest rule family / oracle "
        f"family at that point; gap closed = (best rule - family) / (best rule - oracle), only "
        f"where the best rule costs >= {100 * rep.min_gap:g} % more than the oracle. ± is the "
        "standard deviation over seeds (each seed's own frontier at its own point).",
        "",
    ]
    for (profile, workload), rows in rep.groups().items():
        fams = [r for r in rows if r["role"] != "reference"]
        first = rows[0]
        lines += [
            f"### {workload} on {profile}: at SLO {100 * first['slo_point']:.2f} %",
            "",
            f"Best rule: {first.get('best_rule') or 'none reaches this SLO'}; best oracle: "
            f"{first.get('best_oracle') or 'none reaches this SLO'}.",
            "",
        ]
        lines += _md_table(fams, FRONTIER_COLUMNS)
        lines.append("")
    return lines


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def to_json(result: EvalResult) -> dict[str, Any]:
    s = result.settings
    meta = {k: v for k, v in asdict(s).items() if k not in ("config", "shield")}
    meta["sim_config"] = asdict(s.config)
    meta["shield"] = s.shield.model_dump()  # what the learned policies ran under
    meta["elapsed_s"] = result.elapsed_s
    out: dict[str, Any] = {
        "meta": meta,
        "workloads": [
            {"profile": p, "workload": w, **info} for (p, w), info in result.workloads.items()
        ],
        "policies": result.policies,
        "records": result.records,
    }
    if result.frontier is not None:
        out["frontier"] = frontier_json(result.frontier)
    return _jsonable(out)


def frontier_json(rep: FrontierReport) -> dict[str, Any]:
    return {
        "at_slo": rep.at_slo if rep.at_slo is not None else f"baseline:{rep.baseline}",
        "min_gap": rep.min_gap,
        "families": [
            {
                "name": f.name,
                "template": f.template,
                "role": f.role,
                "specs": list(f.specs),
                "values": list(f.values),
            }
            for f in rep.families
        ],
        "rows": rep.rows,
        "points": rep.points,
    }


def write_report(result: EvalResult, out: str | Path, *, plots: bool = True) -> list[Path]:
    """Write report.md/json/csv (and PNGs) into `out`; returns the files written."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = []
    p = d / "report.json"
    p.write_text(json.dumps(to_json(result), indent=1))
    files.append(p)
    p = d / "report.csv"
    keys: list[str] = []
    for r in result.records:
        keys += [k for k in r if k not in keys]
    with p.open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=keys)
        wr.writeheader()
        for r in result.records:
            wr.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    files.append(p)
    p = d / "report.md"
    p.write_text(markdown(result))
    files.append(p)
    if plots:
        files += write_plots(result, d)
    return files


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")


def write_plots(result: EvalResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    slo_class = result.settings.config.slo
    for (profile, workload), rows in _groups(result).items():
        # a per-length TTFT SLO is drawn at the workload's mean prompt
        mean_prompt = result.workloads.get((profile, workload), {}).get("mean_prompt_tokens", 0.0)
        slo = float(slo_class.ttft_target_s(float(mean_prompt or 0.0)))
        names = [r["policy"] for r in rows]
        fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
        first = result.timelines.get((profile, workload, names[0]))
        if first is None:
            plt.close(fig)
            continue
        hours = (first.time_s - first.time_s[0]) / 3600.0
        axes[0].plot(hours, first.arrival_rps, color="0.3", lw=0.6)
        axes[0].set_ylabel("load (req/s)")
        axes[0].set_title(f"{workload} on {profile} (seed {result.settings.seeds[0]})")
        for name in names:
            tl = result.timelines[(profile, workload, name)]
            axes[1].step(hours, tl.replicas_provisioned, where="post", lw=0.9, label=name)
            axes[2].plot(hours, np.maximum(tl.ttft_p95_s, 1e-3), lw=0.7, label=name)
        axes[1].set_ylabel("replicas (ready + starting)")
        axes[1].legend(ncol=4, fontsize=8, loc="upper left")
        axes[2].axhline(
            slo,
            color="red",
            ls="--",
            lw=1,
            label="TTFT SLO" if slo_class.is_flat else "TTFT SLO at the mean prompt",
        )
        axes[2].set_yscale("log")
        axes[2].set_ylabel("TTFT p95 (s)")
        axes[2].set_xlabel("hours")
        fig.tight_layout()
        p = out / f"timeline_{_slug(profile)}_{_slug(workload)}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p)

    profiles = sorted({r["profile"] for r in result.aggregates()})
    for profile in profiles:
        fig, ax = plt.subplots(figsize=(7, 5))
        rows = [r for r in result.aggregates() if r["profile"] == profile]
        markers = "osD^v<>ph*"
        for i, name in enumerate(dict.fromkeys(r["policy"] for r in rows)):
            pts = [
                (r["cost_vs_oracle"], r["slo_attainment"])
                for r in rows
                if r["policy"] == name and r["cost_vs_oracle"] is not None
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(
                    xs, [100 * y for y in ys], label=name, marker=markers[i % len(markers)], s=40
                )
        ax.axhline(100 * result.settings.slo_target, color="red", ls="--", lw=1, label="SLO target")
        ax.set_xlabel("cost relative to the oracle")
        ax.set_ylabel("SLO attainment (%)")
        ax.set_title(f"cost vs SLO attainment, {profile} (each point: one workload)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / f"cost_vs_slo_{_slug(profile)}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p)
    if result.frontier is not None:
        files += frontier_plots(result.frontier, out)
    return files


def frontier_plots(rep: FrontierReport, out: Path) -> list[Path]:
    """Per (profile, workload): every family's points, its Pareto frontier as a line, the SLO
    point as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pt in rep.points:
        groups.setdefault((pt["profile"], pt["workload"]), []).append(pt)
    markers = "osD^v<>ph*"
    for (profile, workload), pts in groups.items():
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for i, fam in enumerate(dict.fromkeys(p["family"] for p in pts)):
            mine = [p for p in pts if p["family"] == fam and p["cost_usd"] == p["cost_usd"]]
            if not mine:
                continue
            color = f"C{i % 10}"
            xs = [100 * p["slo_attainment"] for p in mine]
            ys = [p["cost_usd"] for p in mine]
            one = len(mine) == 1  # a single policy: a star drawn over the curves
            ax.scatter(
                xs,
                ys,
                color=color,
                marker="*" if one else markers[i % len(markers)],
                s=130 if one else 30,
                zorder=5 if one else 2,
                label=fam,
            )
            front = sorted((x, y) for x, y, p in zip(xs, ys, mine, strict=True) if p["on_frontier"])
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), color=color, lw=1.2)
        ax.axvline(100 * pts[0]["slo_point"], color="red", ls="--", lw=1, label="SLO point")
        ax.set_xlabel("SLO attainment (%)")
        ax.set_ylabel("cost ($)")
        ax.set_title(f"cost vs SLO frontiers: {workload} on {profile}", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / f"frontier_{_slug(profile)}_{_slug(workload)}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p)
    return files
