"""Tune the HPA-form rule (`rlscale.policies.tuned`) on training workloads and write its manifest.

    rlscale tune --profile llama-3.1-8b-h100 --trials 80 \\
        --train synthetic:101 --train synthetic:102 \\
        --train ../shared/data/servegen_language_m-large_clients_10min.csv@0:2

(`rlscale.cli.tune` is the command; this module is the search and the manifest it writes.)

Search: optuna's TPE sampler (seeded, so a rerun gives the same manifest) over
`TunedRuleParams`, starting from a few hand-picked points (the shipped HPA's queue target, a
KV-cache target, ...). Each trial runs the rule on every training workload (scaled exactly as
`rlscale evaluate` scales them, one simulator seed) under its own HPA behaviour, and scores

    score = sum(cost) / sum(oracle cost) + 100 x sum(max(0, target - SLO attainment))

so among rules that meet the SLO target on every training workload the cheapest wins, and a
rule that misses it anywhere ranks below all that do not (a 0.1-point miss costs 0.1 "oracles").
The winner is written as an HPA manifest whose annotations record the workloads, trials, score
and command, so the shipped file says where it came from. Evaluate on workloads not used here.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.contract import DEFAULT_SLO_TARGET
from rlscale.errors import InputError
from rlscale.evaluation.evaluate import (
    EvalSettings,
    load_source,
    opening_replicas,
    scale_for_profile,
)
from rlscale.evaluation.rollout import Run, rollout, run_batch
from rlscale.policies.hpa import HPAPolicy, config_from_manifest
from rlscale.policies.registry import default_limits
from rlscale.policies.tuned import MANIFEST_DIR, TunedRuleParams, manifest_for, write_manifest
from rlscale.profiles.model import ServiceProfile
from rlscale.serving.model import SimConfig
from rlscale.traces.workload import Workload

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRAIN = (
    "synthetic:101",
    "synthetic:102",
    str(REPO_ROOT.parent / "shared" / "data" / "servegen_language_m-large_clients_10min.csv")
    + "@0:2",
)


def _shown(entry: str) -> str:
    """A training workload as the manifest records it: paths relative to the repository."""
    if entry.startswith("synthetic"):
        return entry
    try:
        return os.path.relpath(entry, REPO_ROOT)
    except ValueError:
        return entry


# Hand-picked starting points: the shipped HPA's queue target alone, and KV-cache targets.
STARTS: tuple[dict[str, Any], ...] = (
    {
        "queue_per_replica": 10.0,
        "kv_cache_usage": None,
        "gpu_utilization": None,
        "scale_up_window_s": 0,
        "scale_down_window_s": 300,
        "scale_down_percent": 100,
    },
    {
        "queue_per_replica": 5.0,
        "kv_cache_usage": 0.4,
        "gpu_utilization": None,
        "scale_up_window_s": 0,
        "scale_down_window_s": 300,
        "scale_down_percent": 25,
    },
    {
        "queue_per_replica": 2.0,
        "kv_cache_usage": 0.3,
        "gpu_utilization": None,
        "scale_up_window_s": 0,
        "scale_down_window_s": 600,
        "scale_down_percent": 10,
    },
    {
        "queue_per_replica": 2.0,
        "kv_cache_usage": 0.1,
        "gpu_utilization": None,
        "scale_up_window_s": 0,
        "scale_down_window_s": 600,
        "scale_down_percent": 10,
    },
)


def evaluate_batch(
    param_sets: Sequence[TunedRuleParams],
    profile: ServiceProfile,
    workloads: Sequence[Workload],
    config: SimConfig,
    seed: int = 0,
    initial: Sequence[int] | None = None,
) -> list[list[tuple[float, float]]]:
    """(cost, SLO attainment) per parameter set per workload, all in one batched rollout: the
    simulator's per-step cost hardly grows with the batch, so K rules x n workloads cost about
    one rollout. Cluster b runs rule b // n on workload b % n under that rule's limits, starting
    from `initial[j]` replicas on workload j (default: the simulator's own guess, within the
    limits). The workloads must have the same number of bins."""
    ws = [w.rebin(config.interval_s) for w in workloads]
    if len({w.n_bins for w in ws}) != 1:
        raise ValueError("evaluate_batch needs workloads of equal length (see day_chunks)")
    n, k = len(ws), len(param_sets)
    cfgs = [config_from_manifest(manifest_for(p), "<trial>") for p in param_sets]
    runs = [Run(HPAPolicy(cfgs[b // n]), cfgs[b // n].limits, b % n) for b in range(n * k)]
    start = None if initial is None else np.tile(np.asarray(initial, dtype=np.float64), k)
    # the HPA form reads only the last interval
    ro = run_batch(
        runs,
        profile,
        ws,
        sim_seed=seed * 7919 + n * k,
        config=config,
        window=1,
        initial_replicas=start,
    )
    res = [(s.cost_usd, s.slo_attainment) for s in ro.summaries]
    return [res[i * n : (i + 1) * n] for i in range(k)]


def day_chunks(w: Workload, interval_s: float) -> list[Workload]:
    """Whole days of `w` (a shorter workload is used whole)."""
    from rlscale.traces.transforms import slice_window

    days = int(w.duration_s // 86_400)
    if days < 1:
        return [w.rebin(interval_s)]
    return [
        slice_window(w, d * 86_400.0, (d + 1) * 86_400.0)
        .with_(name=f"{w.name}#d{d}")
        .rebin(interval_s)
        for d in range(days)
    ]


def score(
    results: Sequence[tuple[float, float]], oracle_costs: Sequence[float], slo_target: float
) -> float:
    cost = sum(c for c, _ in results) / max(sum(oracle_costs), 1e-9)
    miss = sum(max(0.0, slo_target - a) for _, a in results)
    return cost + 100.0 * miss


def _suggest(trial: Any, min_replicas: int, max_replicas: int) -> TunedRuleParams:
    kv = trial.suggest_categorical("kv_on", [True, False])
    gpu = trial.suggest_categorical("gpu_utilization", ["off", "80", "90", "95", "99"])
    return TunedRuleParams(
        queue_per_replica=trial.suggest_float("queue_per_replica", 0.5, 50.0, log=True),
        # log scale: the useful targets sit low for a long cold start (0.1 on the 70B profile, whose
        # KV usage at the knee is only ~0.47), and a linear range spends most trials above them
        kv_cache_usage=trial.suggest_float("kv_cache_usage", 0.03, 0.9, log=True) if kv else None,
        gpu_utilization=None if gpu == "off" else float(gpu),
        scale_up_window_s=trial.suggest_categorical("scale_up_window_s", [0, 15, 30, 60]),
        scale_down_window_s=trial.suggest_categorical(
            "scale_down_window_s", [0, 60, 120, 300, 600]
        ),
        scale_down_percent=trial.suggest_categorical("scale_down_percent", [10, 25, 50, 100]),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
    )


def _start_point(p: dict[str, Any]) -> dict[str, Any]:
    d = {k: v for k, v in p.items() if k != "kv_cache_usage"}
    d["kv_on"] = p["kv_cache_usage"] is not None
    if p["kv_cache_usage"] is not None:
        d["kv_cache_usage"] = p["kv_cache_usage"]
    d["gpu_utilization"] = "off" if p["gpu_utilization"] is None else f"{p['gpu_utilization']:g}"
    return d


def tune(
    profile: ServiceProfile,
    train: Sequence[str],
    *,
    trials: int = 80,
    batch: int = 8,
    slo_target: float = DEFAULT_SLO_TARGET,
    settings: EvalSettings | None = None,
    seed: int = 0,
    log: Any = print,
) -> tuple[TunedRuleParams, dict[str, Any]]:
    """Search `trials` parameter sets, `batch` at a time (one batched simulator per batch)."""
    import optuna

    from rlscale.policies.oracle import OraclePolicy, plan_oracle

    settings = settings or EvalSettings()
    cfg = settings.config
    workloads: list[Workload] = []
    initial: list[int] = []
    for t in train:
        scaled, info = scale_for_profile(load_source(t, cfg.interval_s), profile, settings)
        chunks = day_chunks(scaled, cfg.interval_s)
        workloads += chunks
        initial += [
            opening_replicas(c, info["slo_capacity_rps"], settings.opening_s) for c in chunks
        ]
    lengths = {w.n_bins for w in workloads}
    if len(lengths) != 1:
        raise InputError(
            ", ".join(train),
            "training workloads must be whole days (or all the same length)",
            field="train",
        )
    limits = default_limits(settings.min_replicas, settings.max_replicas, profile.gpus_per_replica)
    oracle_costs = []
    initial = [int(np.clip(n, settings.min_replicas, settings.max_replicas)) for n in initial]
    for w, n0 in zip(workloads, initial, strict=True):
        plan = plan_oracle(
            profile, w, config=cfg, limits=limits, slo_target=slo_target, initial_replicas=n0
        )
        pol = OraclePolicy(plan)

        def oracle(_seed: int, pol: OraclePolicy = pol) -> OraclePolicy:
            return pol

        s = rollout(
            oracle, profile, w, seeds=(seed,), limits=limits, config=cfg, initial_replicas=n0
        ).summaries[0]
        oracle_costs.append(s.cost_usd)
        log(f"oracle on {w.name}: ${s.cost_usd:.0f}, SLO {100 * s.slo_attainment:.2f} %")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=16)
    )
    for p in STARTS:
        study.enqueue_trial(_start_point(p))
    t0 = time.perf_counter()
    done = 0
    while done < trials:
        asked = [study.ask() for _ in range(min(batch, trials - done))]
        params = [_suggest(tr, settings.min_replicas, settings.max_replicas) for tr in asked]
        results = evaluate_batch(params, profile, workloads, cfg, seed, initial)
        for tr, pr, res in zip(asked, params, results, strict=True):
            val = score(res, oracle_costs, slo_target)
            tr.set_user_attr("params", pr.model_dump())
            tr.set_user_attr("results", res)
            study.tell(tr, val)
            log(
                f"trial {tr.number:3d}  score {val:8.3f}  worst SLO {100 * min(a for _, a in res):.2f}%  "
                f"cost {sum(c for c, _ in res) / sum(oracle_costs):.3f}x oracle  "
                f"{pr.model_dump(exclude={'min_replicas', 'max_replicas'})}"
            )
        done += len(asked)
        log(
            f"-- {done}/{trials} trials, best {study.best_value:.3f} ({time.perf_counter() - t0:.0f} s)"
        )
    best = study.best_trial
    params_best = TunedRuleParams(**best.user_attrs["params"])
    res = best.user_attrs["results"]
    record = {
        "score": best.value,
        "trials": sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
        "train": list(train),
        "workloads": [w.name for w in workloads],
        "results": [
            {"workload": w.name, "cost_usd": c, "cost_vs_oracle": c / o, "slo_attainment": a}
            for w, (c, a), o in zip(workloads, res, oracle_costs, strict=True)
        ],
        "slo_target": slo_target,
        "seconds": time.perf_counter() - t0,
    }
    return params_best, record


def tuned_annotations(
    profile: ServiceProfile, record: dict[str, Any], command: str, slo_target: float
) -> dict[str, str]:
    """What the manifest records about where the rule came from (`record` is `tune`'s)."""
    return {
        "rlscale.io/tuned-for-profile": profile.name,
        "rlscale.io/tuned-by": command,
        "rlscale.io/tuned-on": ", ".join(_shown(t) for t in record["train"]),
        "rlscale.io/tuned-at": dt.date.today().isoformat(),
        "rlscale.io/objective": f"cost / oracle cost + 100 x SLO shortfall below {slo_target:g} (per workload)",
        "rlscale.io/score": f"{record['score']:.4f} after {record['trials']} trials",
        "rlscale.io/train-results": "; ".join(
            f"{r['workload']}: {r['cost_vs_oracle']:.2f}x oracle, SLO {100 * r['slo_attainment']:.2f}%"
            for r in record["results"]
        ),
    }


def write_tuned_manifest(
    out: Path | None,
    profile: ServiceProfile,
    params: TunedRuleParams,
    record: dict[str, Any],
    command: str,
    slo_target: float,
) -> Path:
    """Write the winner as an annotated HPA manifest (default: the shipped tuned-<profile>.yaml)."""
    path = out or MANIFEST_DIR / f"tuned-{profile.name}.yaml"
    header = (
        f"# Tuned HPA rule for {profile.name} (rlscale issue #3), written by `rlscale tune`.\n"
        "# Search space and objective: rlscale/policies/tuned.py and rlscale/training/tune.py. "
        "Do not tune on evaluation traces."
    )
    annotations = tuned_annotations(profile, record, command, slo_target)
    return write_manifest(path, manifest_for(params, annotations=annotations), header)
