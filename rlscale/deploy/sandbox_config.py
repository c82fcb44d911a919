"""A ready controller config for a running `rlscale sandbox` (`rlscale sandbox
--write-controller-config PATH`): its Prometheus, its kubeconfig, its Deployment, and the
settings that undo its time scale.

A sandbox at `--time-scale N` runs N simulated seconds per wall second. Gauges (queue, batch,
KV cache, GPU utilisation) and latencies (the histograms observe simulated seconds) read as in a
cluster, but a counter's `rate()` per wall second is N times the simulated rate: at N = 10 a
5 req/s workload reads 50 req/s. So the three rate fields' default queries are divided by N, and
the controller's clock settings that describe the service's time (the tick, the rate window, the
staleness bound, the manual-override hold, the starting guard) are divided by N too, so the policy
sees what it would see in a cluster at tick 15 s and a 1-minute window.

The policy's safety limits (an HPA's `behavior`: stabilisation windows, rate-limit periods) are
written out with their windows and periods divided by N as well (`time_scaled_limits`), so an HPA
waits its 300 s down-stabilisation in the sandbox's time, not N x 300 s of it. Leader election
is off (one controller per sandbox).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlscale.deploy import promql
from rlscale.deploy.config import TargetConfig, parse_config
from rlscale.deploy.policies import build_target_policies
from rlscale.safety import SafetyLimits, ScalingRules

RATE_FIELDS: tuple[str, ...] = ("arrival_rps", "prompt_tokens_per_s", "output_tokens_per_s")

# What a cluster config uses (the controller's and MetricsConfig's defaults), in seconds.
CLUSTER_TICK_S = 15.0
CLUSTER_RATE_WINDOW_S = 60.0
CLUSTER_MAX_STALENESS_S = 60.0
CLUSTER_MANUAL_HOLD_S = 600.0
CLUSTER_STARTING_GUARD_S = 900.0


def time_scaled_queries(time_scale: float) -> dict[str, str]:
    """The rate fields' default PromQL divided by `time_scale` (per simulated second)."""
    if not time_scale > 0:
        raise ValueError(f"time_scale = {time_scale}, must be > 0")
    return {f: f"({promql.DEFAULT_QUERIES[f]}) / {time_scale:g}" for f in RATE_FIELDS}


def time_scaled_limits(limits: SafetyLimits, time_scale: float) -> SafetyLimits:
    """`limits` with every stabilisation window and rate-limit period divided by `time_scale`."""

    def rules(r: ScalingRules) -> ScalingRules:
        return r.model_copy(
            update={
                "stabilization_window_s": r.stabilization_window_s / time_scale,
                "policies": tuple(
                    p.model_copy(update={"period_s": p.period_s / time_scale}) for p in r.policies
                ),
            }
        )

    return limits.model_copy(
        update={"scale_up": rules(limits.scale_up), "scale_down": rules(limits.scale_down)}
    )


def _seconds(cluster_s: float, time_scale: float, at_least_s: float) -> float:
    return round(max(cluster_s / time_scale, at_least_s), 3)


def sandbox_controller_config(
    *,
    prometheus_url: str,
    kubeconfig: str | Path,
    namespace: str,
    deployment: str,
    profile: str,
    time_scale: float,
    scrape_interval_s: float = 1.0,
    policy: str = "hpa",
    dry_run: bool = False,
) -> dict[str, Any]:
    """The config as a mapping (validate it with `rlscale.deploy.config.parse_config`); `policy`
    is built once here for its limits (an HPA manifest's `behavior`, a checkpoint's). The rate
    window holds at least 4 scrapes and the staleness bound 3, whatever the time scale: at
    N = 60 a simulated minute is one wall second, a single scrape."""
    ts = float(time_scale)
    window_s = _seconds(CLUSTER_RATE_WINDOW_S, ts, 4 * scrape_interval_s)
    limits = time_scaled_limits(
        build_target_policies(
            TargetConfig.model_validate(
                {
                    "namespace": namespace,
                    "deployment": deployment,
                    "profile": profile,
                    "policy": policy,
                }
            )
        ).limits,
        ts,
    )
    return {
        "tick_s": _seconds(CLUSTER_TICK_S, ts, max(scrape_interval_s, 0.05)),
        "dry_run": dry_run,
        "prometheus": {"url": prometheus_url},
        "kubernetes": {"kubeconfig": str(kubeconfig)},
        "leader_election": {"enabled": False},
        "exporter": {"enabled": True, "address": "127.0.0.1", "port": 0},
        "targets": [
            {
                "namespace": namespace,
                "deployment": deployment,
                "profile": profile,
                "policy": policy,
                "limits": limits.model_dump(mode="json"),
                "metrics": {
                    "rate_window": f"{int(round(window_s * 1000))}ms",
                    "max_staleness_s": _seconds(CLUSTER_MAX_STALENESS_S, ts, 3 * scrape_interval_s),
                    "queries": time_scaled_queries(ts),
                },
                "manual_override_hold_s": _seconds(CLUSTER_MANUAL_HOLD_S, ts, 0.0),
                "starting_guard_s": _seconds(CLUSTER_STARTING_GUARD_S, ts, 0.0),
            }
        ],
    }


def write_sandbox_controller_config(
    path: str | Path, config: dict[str, Any], time_scale: float
) -> Path:
    """Validate `config` and write it as YAML with a header that says what was rescaled."""
    parse_config(config, str(path))  # a config we write must load
    header = (
        f"# rlscale controller config for a `rlscale sandbox` at time scale {time_scale:g}\n"
        f"# (written by `rlscale sandbox --write-controller-config`). The rate queries are\n"
        f"# divided by {time_scale:g} and tick_s, rate_window, max_staleness_s,\n"
        f"# manual_override_hold_s and starting_guard_s are a cluster's defaults / {time_scale:g},\n"
        "# so the policy sees per-simulated-second rates; so are the limits' windows and periods.\n"
        "# Run: rlscale control --config THIS_FILE [--dry-run]\n"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return out
