"""What-if on the user's own week: what each policy would have cost and attained on their traffic.

Inputs: the HPA manifest the service runs with today, a trace of its traffic (`rlscale traces
export` writes one from Prometheus; any format `load_workload` reads works), and a profile of
the service (`rlscale profiles fit` / `cold-start`, or a shipped one). The run is an ordinary
evaluation (`run_evaluation`: the same rollout loop, clamps, seeds and records as `rlscale
evaluate`) with three differences, each because the question is about *this* service:

* the trace runs as recorded (`EvalSettings.rescale=False`), never rescaled to a fleet size:
  the user's rate is the point;
* the baseline is the user's HPA, and the replica bounds of the policies without their own
  default to its minReplicas / maxReplicas (an oracle with a higher ceiling would be a different
  service);
* the default policies are families swept over their dial, scored at equal SLO on their
  frontiers (`rlscale.evaluation.frontier`):

  | family          | specs                                                    | why                          |
  |-----------------|----------------------------------------------------------|------------------------------|
  | your HPA        | `hpa:PATH#target_scale={0.5,0.75,1,1.5,2}` (1 = as deployed) | the setting you can change today |
  | target:U        | `target:{0.6..0.9:0.1}`                                  | the best rule at equal SLO in the README's results |
  | tuned           | `tuned`                                                  | the tuned HPA shipped for the profile |
  | ppo             | `ppo:checkpoints/ppo-<profile>` when one is shipped      | the learned policy           |
  | oracle          | `oracle`                                                 | the lower bound on cost (clairvoyant: never recommended) |

The recommended setting is the cheapest evaluated spec (the oracle excepted: it reads the
future) whose mean SLO attainment over the seeds is at least the target; a frontier read between
two points is not a setting anyone can deploy, so the recommendation is always a point that ran.
When none meets the target the report says so and names the best attainment reached.

Cost: the 12 default rollouts of a week (40,320 intervals of 15 s, 2 seeds) took 217 s and 294 s
of wall time (241 s of CPU) on one core of the shared 2-core box (ServeGen m-large days 0-7 on
the 8B profile); half a day takes ~15 s. `--engine requests` is much slower.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.errors import InputError
from rlscale.evaluation.evaluate import EvalResult, EvalSettings, run_evaluation
from rlscale.evaluation.frontier import Frontier, FrontierReport, frontier_specs, score_frontiers
from rlscale.profiles.model import ServiceProfile

HPA_DIAL: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)  # target_scale; 1 = as deployed
TARGET_DIAL = "target:{0.6..0.9:0.1}"
# where a shipped checkpoint for a profile is looked up: checkpoints/ppo-<profile name>
CHECKPOINT_ROOTS: tuple[Path, ...] = (
    Path("checkpoints"),
    Path(__file__).resolve().parents[2] / "checkpoints",
)
# policies a recommendation may name: every kind the live controller can serve
DEPLOYABLE = ("hpa", "threshold", "tuned", "predictive", "target", "capacity", "ppo", "static")
_UNSAFE_PATH = re.compile(r"[#,{}]")


@dataclass(frozen=True)
class WhatIfPlan:
    """What one what-if runs: the trace, the profile, the user's HPA (the baseline spec), the
    single policies and the swept families, and the evaluation settings."""

    trace: str
    profile: ServiceProfile
    hpa_spec: str
    policies: tuple[str, ...]
    frontiers: tuple[Frontier, ...]
    settings: EvalSettings

    @property
    def specs(self) -> list[str]:
        """Every spec that runs, in order (run_evaluation adds the oracle and the baseline)."""
        specs = list(dict.fromkeys([*self.policies, *frontier_specs(self.frontiers)]))
        return specs + [s for s in ("oracle", self.hpa_spec) if s not in specs]


def find_checkpoint(
    profile: ServiceProfile, roots: Sequence[Path] = CHECKPOINT_ROOTS
) -> Path | None:
    """The shipped PPO checkpoint for `profile` (`checkpoints/ppo-<name>`), if there is one."""
    for root in roots:
        path = root / f"ppo-{profile.name}"
        if (path / "manifest.json").exists():
            return path
    return None


def hpa_spec(manifest: Path, target_scale: float | None = None) -> str:
    """`hpa:PATH[#target_scale=F]`, refusing a path the spec grammar cannot carry."""
    text = str(manifest)
    if _UNSAFE_PATH.search(text):
        raise InputError(
            text, "the HPA manifest's path must not contain '#', ',', '{' or '}'", field="hpa"
        )
    return f"hpa:{text}" + ("" if target_scale is None else f"#target_scale={target_scale:g}")


def plan_whatif(
    trace: str,
    profile: ServiceProfile,
    hpa_manifest: Path,
    *,
    policies: Sequence[str] | None = None,
    frontiers: Sequence[str] | None = None,
    sweep: bool = True,
    settings: EvalSettings | None = None,
    checkpoint_roots: Sequence[Path] = CHECKPOINT_ROOTS,
) -> WhatIfPlan:
    """Resolve the defaults (module docstring). `policies` replace the default singles (tuned,
    ppo); `frontiers` (dial templates, `rlscale evaluate --frontier` grammar) replace the default
    sweeps; `sweep=False` runs the HPA as deployed and the singles only. The settings' replica
    bounds are taken from the manifest unless `settings` is given."""
    from rlscale.policies.hpa import load_hpa_manifest

    if not Path(hpa_manifest).is_file():
        raise InputError(str(hpa_manifest), "file not found", field="hpa")
    hpa_cfg = load_hpa_manifest(hpa_manifest)  # InputError naming the field on a bad manifest
    if settings is None:
        settings = EvalSettings(
            seeds=(0, 1),
            min_replicas=hpa_cfg.limits.min_replicas,
            max_replicas=hpa_cfg.limits.max_replicas,
        )
    fams: list[Frontier] = []
    if frontiers is not None:
        fams = [Frontier.parse(f) for f in frontiers]
    elif sweep:
        dial = ",".join(f"{v:g}" for v in HPA_DIAL)
        fams = [
            Frontier.parse(f"your-hpa={hpa_spec(hpa_manifest)}#target_scale={{{dial}}}"),
            Frontier.parse(TARGET_DIAL),
        ]
    # the HPA as deployed: one of the sweep's points when the sweep has scale 1, else its own
    as_deployed = hpa_spec(hpa_manifest, 1.0)
    baseline = as_deployed if as_deployed in frontier_specs(fams) else hpa_spec(hpa_manifest)
    if policies is None:
        singles = ["tuned"]
        ckpt = find_checkpoint(profile, checkpoint_roots)
        if ckpt is not None:
            singles.append(f"ppo:{ckpt}")
    else:
        singles = list(policies)
    singles = [baseline, *[s for s in singles if s != baseline]]
    return WhatIfPlan(
        trace=trace,
        profile=profile,
        hpa_spec=baseline,
        policies=tuple(singles),
        frontiers=tuple(fams),
        settings=replace(settings, baseline=baseline, rescale=False),
    )


# --- the run and its reading -----------------------------------------------------------------


@dataclass
class Recommendation:
    """The cheapest deployable spec meeting the SLO target (`met`), else the best attainment."""

    met: bool
    row: dict[str, Any]
    slo_target: float


@dataclass
class WhatIfResult:
    plan: WhatIfPlan
    evaluation: EvalResult
    rows: list[dict[str, Any]]  # one per spec (seed means), with per-day figures
    at_baseline: FrontierReport | None  # families read at the HPA's attainment
    at_target: FrontierReport | None  # ... and at the SLO target
    recommendation: Recommendation | None
    days: float
    elapsed_s: float = 0.0
    files: list[Path] = field(default_factory=list)

    @property
    def workload(self) -> str:
        return self.rows[0]["workload"]

    @property
    def baseline_row(self) -> dict[str, Any]:
        return next(r for r in self.rows if r["spec"] == self.plan.hpa_spec)


def run_whatif(
    plan: WhatIfPlan,
    *,
    progress: Callable[[str], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> WhatIfResult:
    """Run every spec of `plan` on its trace (one `run_evaluation`) and read the result."""
    started = time.perf_counter()
    ev = run_evaluation(
        list(plan.policies),
        [plan.trace],
        [plan.profile],
        plan.settings,
        progress=progress,
        on_step=on_step,
        frontiers=plan.frontiers,
    )
    info = next(iter(ev.workloads.values()))
    days = info["duration_h"] / 24.0
    rows = []
    for r in ev.aggregates():
        row = dict(r)
        row["cost_usd_per_day"] = r["cost_usd"] / days
        row["cost_usd_per_day_std"] = (r.get("cost_usd_std") or 0.0) / days
        row["kind"] = r["spec"].partition("#")[0].partition(":")[0]
        row["as_deployed"] = r["spec"] == plan.hpa_spec
        row["label"] = label(row)
        rows.append(row)
    at_baseline = ev.frontier
    at_target = (
        score_frontiers(
            ev.records,
            plan.frontiers,
            baseline=plan.hpa_spec,
            at_slo=plan.settings.slo_target,
        )
        if plan.frontiers
        else None
    )
    result = WhatIfResult(
        plan,
        ev,
        rows,
        at_baseline,
        at_target,
        recommend(rows, plan.settings.slo_target),
        days,
    )
    result.elapsed_s = time.perf_counter() - started
    return result


def recommend(rows: Sequence[dict[str, Any]], slo_target: float) -> Recommendation | None:
    """The cheapest deployable row with mean attainment >= `slo_target`; if none, the deployable
    row with the highest attainment (cheapest among equals), `met=False`."""
    cands = [r for r in rows if r["kind"] in DEPLOYABLE and _finite(r.get("slo_attainment"))]
    if not cands:
        return None
    meeting = [r for r in cands if r["slo_attainment"] >= slo_target - 1e-12]
    if meeting:
        return Recommendation(True, min(meeting, key=lambda r: r["cost_usd"]), slo_target)
    best = max(cands, key=lambda r: (r["slo_attainment"], -r["cost_usd"]))
    return Recommendation(False, best, slo_target)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


# --- the report ------------------------------------------------------------------------------

ROW_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("label", "policy", "s"),
    ("cost_usd_per_day", "$/day", ".0f"),
    ("cost_vs_baseline", "x your HPA", ".2f"),
    ("cost_vs_oracle", "x oracle", ".2f"),
    ("slo_attainment", "SLO %", "%"),
    ("ttft_p95_s", "TTFT p95 s", ".2f"),
    ("tpot_p95_s", "TPOT p95 ms", "ms"),
    ("scale_events_per_day", "scale ev/day", ".0f"),
    ("cold_starts_per_day", "cold st/day", ".0f"),
    ("mean_replicas", "mean repl", ".1f"),
)


def label(row: dict[str, Any]) -> str:
    name = str(row["policy"])
    return f"{name} (as deployed)" if row.get("as_deployed") else name


def recommendation_text(result: WhatIfResult) -> str:
    """One paragraph: the recommended setting with its numbers, against the HPA as deployed."""
    rec = result.recommendation
    base = result.baseline_row
    target = 100 * result.plan.settings.slo_target
    if rec is None:
        return "No deployable policy was evaluated, so there is nothing to recommend."
    r = rec.row
    numbers = (
        f"${r['cost_usd_per_day']:,.0f}/day ({r['cost_vs_baseline']:.2f}x your HPA's "
        f"${base['cost_usd_per_day']:,.0f}/day), SLO attainment {100 * r['slo_attainment']:.2f} % "
        f"(your HPA {100 * base['slo_attainment']:.2f} %), TTFT p95 {r['ttft_p95_s']:.2f} s, "
        f"{r['scale_events_per_day']:.0f} scale events and {r['cold_starts_per_day']:.0f} cold "
        "starts per day"
    )
    seeds = len(result.plan.settings.seeds)
    if rec.met:
        text = (
            f"**`{r['policy']}`**{' (your HPA as deployed)' if r.get('as_deployed') else ''}, "
            f"the cheapest evaluated setting meeting the {target:g} % SLO target on this "
            f"trace: {numbers}."
        )
        if r["kind"] == "hpa" and r.get("target_scale") not in (None, 1.0):
            text += (
                f" In the manifest: every metric target x {r['target_scale']:g}, behaviour "
                "unchanged (written as `recommended-hpa.yaml`)."
            )
    else:
        text = (
            f"No evaluated setting meets the {target:g} % SLO target on this trace; the highest "
            f"attainment is **`{r['policy']}`**: {numbers}. Raise maxReplicas, lower the targets "
            "further (`--frontier`) or check the profile's capacity."
        )
    return text + f" Mean of {seeds} seed{'s' if seeds > 1 else ''}."


def markdown(result: WhatIfResult, plot_files: Sequence[Path] = ()) -> str:
    from rlscale.evaluation.report import _md_table

    plan, s = result.plan, result.plan.settings
    info = next(iter(result.evaluation.workloads.values()))
    p = plan.profile
    gaps = info.get("gaps_masked")
    rows = sorted(result.rows, key=lambda r: (r["kind"] == "oracle", r["cost_usd"]))
    lines = [
        f"# What-if: {result.workload} on {p.name}",
        "",
        f"Trace `{plan.trace}`: {_span(result.days)}, mean {info['mean_rps']:.2f} req/s, peak "
        f"minute {info['peak_1min_rps']:.2f} req/s, prompt {info['mean_prompt_tokens']:.0f} / "
        f"output {info['mean_output_tokens']:.0f} tokens on average, run as recorded (not "
        "rescaled)" + (f"; {gaps} gap steps filled" if gaps else "") + ".",
        "",
        f"Service: `{p.name}` ({p.model} on {p.gpus_per_replica}x {p.gpu}, "
        f"${p.replica_usd_per_hour:g}/replica-hour, mean cold start {p.mean_cold_start_s:.0f} s); "
        f"one replica serves {info['slo_capacity_rps']:.2f} req/s of this traffic within the SLO. "
        f"SLO: {s.config.slo.describe()} "
        f"per request, target attainment {100 * s.slo_target:g} %. Replica bounds "
        f"{s.min_replicas}-{s.max_replicas} (from your HPA) for the policies without their own; "
        f"{len(s.seeds)} seed(s), {s.engine} engine, {s.config.interval_s:g} s interval; every "
        f"policy starts from {info['opening_replicas']} replicas.",
        "",
        "## Recommended setting",
        "",
        recommendation_text(result),
        "",
        "## Every policy on this trace",
        "",
        "Mean ± standard deviation over seeds; x your HPA and x oracle are cost ratios; the "
        "oracle plans with the trace's future and is the lower bound on cost, not a setting.",
        "",
        *_md_table(rows, ROW_COLUMNS),
        "",
    ]
    if result.at_baseline is not None or result.at_target is not None:
        lines += [
            "## At equal SLO (frontiers)",
            "",
            "Each family's points (seed means) reduced to their Pareto frontier of (SLO "
            "attainment, cost) and read at one attainment by linear interpolation between "
            "neighbouring points; '-' where that attainment is outside the family's frontier "
            "(never extrapolated; a single policy is a one-point family). 'cheapest point >= "
            "target' is the cheapest setting of the family that ran and met the target. Your "
            f"HPA's attainment: {100 * result.baseline_row['slo_attainment']:.2f} %.",
            "",
        ]
        lines += equal_slo_table(result)
        lines.append("")
    if plot_files:
        lines += ["## Plots", ""]
        lines += [f"![{f.stem}]({f.name})" for f in plot_files]
        lines.append("")
    lines.append(
        f"{len(result.rows)} policies evaluated in {result.elapsed_s:.1f} s "
        f"(`rlscale whatif`; the records are in whatif.json)."
    )
    return "\n".join(lines) + "\n"


EQUAL_SLO_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("family", "family", "s"),
    ("points", "points (on frontier)", "s"),
    ("slo_range", "SLO range %", "s"),
    ("at_baseline", "$/day at your HPA's SLO", ".0f"),
    ("at_baseline_vs_hpa", "x your HPA", ".2f"),
    ("at_target", "$/day at the target", ".0f"),
    ("cheapest_meeting", "cheapest point >= target", "s"),
)


def equal_slo_table(result: WhatIfResult) -> list[str]:
    """One row per family: its cost read at the HPA's attainment and at the SLO target (per
    day), and its cheapest evaluated point meeting the target."""
    from rlscale.evaluation.report import _md_table, fmt_value

    target = result.plan.settings.slo_target
    by_spec = {r["spec"]: r for r in result.rows}

    def fam_rows(rep: FrontierReport | None) -> dict[str, dict[str, Any]]:
        if rep is None:
            return {}
        return {r["policy"]: r for r in rep.rows if r["role"] != "reference"}

    at_b, at_t = fam_rows(result.at_baseline), fam_rows(result.at_target)
    families = (result.at_baseline or result.at_target).families  # type: ignore[union-attr]
    hpa_family = next((f.name for f in families if result.plan.hpa_spec in f.specs), None)
    hpa_cost = (at_b.get(hpa_family) or {}).get("cost@slo") if hpa_family else None
    out = []
    for f in families:
        b, t = at_b.get(f.name, {}), at_t.get(f.name, {})
        if not b and not t:
            continue
        ran = [by_spec[s] for s in f.specs if s in by_spec]
        meeting = [
            r for r in ran if _finite(r.get("slo_attainment")) and r["slo_attainment"] >= target
        ]
        best = min(meeting, key=lambda r: r["cost_usd"]) if meeting else None
        cost_b, cost_t = b.get("cost@slo"), t.get("cost@slo")
        row = b or t
        lo, hi = row.get("slo_min"), row.get("slo_max")
        out.append(
            {
                "family": f.name,
                "points": f"{len(f.specs)} ({row.get('on_frontier', 0)})",
                "slo_range": "-"
                if lo is None
                else f"{fmt_value(lo, '%')}-{fmt_value(hi, '%')}"
                if hi != lo
                else fmt_value(lo, "%"),
                "at_baseline": None if cost_b is None else cost_b / result.days,
                "at_baseline_vs_hpa": None if cost_b is None or not hpa_cost else cost_b / hpa_cost,
                "at_target": None if cost_t is None else cost_t / result.days,
                "cheapest_meeting": "none"
                if best is None
                else f"{best['policy']}: ${best['cost_usd_per_day']:,.0f}/day, "
                f"{fmt_value(best['slo_attainment'], '%')} %",
            }
        )
    return _md_table(out, EQUAL_SLO_COLUMNS)


def timeline_plot(result: WhatIfResult, out: Path, *, max_lines: int = 6) -> Path | None:
    """Replicas (ready + starting) over time for the HPA as deployed, the recommendation, the
    singles and the oracle, against the replicas the demand needs at the SLO capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = result.evaluation
    (profile, workload), info = next(iter(ev.workloads.items()))
    rec = result.recommendation.row["policy"] if result.recommendation else None
    wanted = [r["policy"] for r in result.rows if r["as_deployed"]]
    wanted += [rec] if rec else []
    wanted += [r["policy"] for r in result.rows if r["spec"] in result.plan.policies]
    wanted += [r["policy"] for r in result.rows if r["kind"] == "oracle"]
    names = [n for n in dict.fromkeys(wanted) if (profile, workload, n) in ev.timelines]
    names = names[:max_lines]
    if not names:
        return None
    first = ev.timelines[(profile, workload, names[0])]
    hours = (first.time_s - first.time_s[0]) / 3600.0
    x = hours / 24.0 if result.days > 2 else hours
    fig, ax = plt.subplots(figsize=(12, 5))
    need = demand_replicas(first.arrival_rps, info["slo_capacity_rps"])
    ax.fill_between(x, 0, need, step="post", color="0.85", label="demand (replicas needed)")
    for i, name in enumerate(names):
        tl = ev.timelines[(profile, workload, name)]
        mark = (
            " (recommended)"
            if result.recommendation and result.recommendation.met
            else " (best SLO)"
        )
        lbl = name + (mark if name == rec else "")
        ax.step(x, tl.replicas_provisioned, where="post", lw=0.8, color=f"C{i}", label=lbl)
    ax.set_xlabel("days" if result.days > 2 else "hours")
    ax.set_ylabel("replicas (ready + starting)")
    ax.set_title(
        f"replicas over time vs demand: {workload} on {profile} (seed {ev.settings.seeds[0]})"
    )
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    from rlscale.evaluation.report import _slug

    p = out / f"replicas_{_slug(workload)}.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def recommended_manifest(result: WhatIfResult) -> dict[str, Any] | None:
    """The user's manifest with every metric target times the recommended `target_scale`, when
    the recommendation is their HPA at another scale; else None."""
    import yaml

    rec = result.recommendation
    if rec is None or not rec.met or rec.row["kind"] != "hpa":
        return None
    factor = rec.row.get("target_scale")
    if factor is None or factor == 1.0:
        return None
    path = Path(rec.row["spec"].partition("#")[0].partition(":")[2])
    docs = list(yaml.safe_load_all(path.read_text()))
    doc = next(
        (d for d in docs if isinstance(d, dict) and d.get("kind") == "HorizontalPodAutoscaler"),
        docs[0],
    )
    for m in (doc.get("spec") or {}).get("metrics") or []:
        for source in m.values():
            target = source.get("target") if isinstance(source, dict) else None
            if not isinstance(target, dict):
                continue
            for key in ("averageValue", "value", "averageUtilization"):
                if key in target:
                    from rlscale.policies.hpa import parse_quantity

                    target[key] = f"{parse_quantity(target[key]) * factor:g}"
    meta = doc.setdefault("metadata", {}) or {}
    meta.setdefault("annotations", {})["rlscale.io/whatif"] = (
        f"targets x {factor:g} of {path.name}: {100 * rec.row['slo_attainment']:.2f} % SLO at "
        f"{rec.row['cost_vs_baseline']:.2f}x the cost on {result.workload}"
    )
    return doc


def write_whatif(result: WhatIfResult, out: str | Path, *, plots: bool = True) -> list[Path]:
    """whatif.md, whatif.json (the evaluation's records plus the recommendation), whatif.csv
    (one row per policy) and the PNGs, into `out`; returns the files written."""
    import csv
    import json

    import yaml

    from rlscale.evaluation.report import _jsonable, frontier_json, frontier_plots, to_json

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    plot_files: list[Path] = []
    if plots:
        tl = timeline_plot(result, d)
        plot_files += [tl] if tl else []
        # one frontier plot: the points are the same at either SLO point
        if result.at_baseline is not None:
            plot_files += frontier_plots(result.at_baseline, d)
    doc = to_json(result.evaluation)
    doc["whatif"] = _jsonable(
        {
            "trace": result.plan.trace,
            "hpa": result.plan.hpa_spec,
            "days": result.days,
            "rows": result.rows,
            "recommendation": None
            if result.recommendation is None
            else {
                "met": result.recommendation.met,
                "slo_target": result.recommendation.slo_target,
                "spec": result.recommendation.row["spec"],
                "row": result.recommendation.row,
                "text": recommendation_text(result),
            },
            "at_target": None if result.at_target is None else frontier_json(result.at_target),
            "elapsed_s": result.elapsed_s,
        }
    )
    p = d / "whatif.json"
    p.write_text(json.dumps(doc, indent=1))
    files.append(p)
    p = d / "whatif.csv"
    keys = ["label", "spec", "cost_usd_per_day"]  # then the rest as they come
    for r in result.rows:
        keys += [k for k in r if k not in keys]
    with p.open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=keys)
        wr.writeheader()
        for r in result.rows:
            wr.writerow({k: "" if r.get(k) is None else r.get(k) for k in keys})
    files.append(p)
    manifest = recommended_manifest(result)
    if manifest is not None:
        p = d / "recommended-hpa.yaml"
        p.write_text(yaml.safe_dump(manifest, sort_keys=False))
        files.append(p)
    p = d / "whatif.md"
    p.write_text(markdown(result, plot_files))
    files.insert(0, p)
    result.files = files + plot_files
    return result.files


def demand_replicas(arrival_rps: np.ndarray, capacity_rps: float) -> np.ndarray:
    """Replicas the demand needs at `capacity_rps` each (the grey area of the timeline plot)."""
    return np.asarray(arrival_rps, dtype=float) / capacity_rps


def _span(days: float) -> str:
    """A trace's length in the unit a reader expects (a week reads in days, a test in minutes)."""
    if days >= 1.0:
        return f"{days:.2f} days"
    if days * 24 >= 1.0:
        return f"{days * 24:.1f} h"
    return f"{days * 1440:.1f} min"
