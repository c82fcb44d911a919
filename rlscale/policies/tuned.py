"""Tuned rule: the best HPA a careful operator would configure for this service.

It is an HPA (`rlscale.policies.hpa`) whose signals, targets and behaviour were searched on
*training* days and selected on validation windows (`rlscale tune`), scored by cost subject to
SLO attainment >= the target. One config model, `TunedRuleParams`; every signal is a Pods metric
with an AverageValue target (off = None), the HPA takes the max over them:

| parameter                         | HPA metric (per pod)                 | why                                   |
|-----------------------------------|--------------------------------------|---------------------------------------|
| `queue_per_replica`               | `request_queue_size`                 | backlog: reacts after the knee        |
| `kv_cache_usage`                  | `kv_cache_usage` (0..1)              | batch occupancy, before the queue     |
| `gpu_utilization`                 | `gpu_utilization` (percent)          | saturates early; kept for comparison  |
| `request_rps_per_replica`         | `request_rate` (req/s)               | demand, readable under overload too   |
| `prompt_tokens_per_s_per_replica` | `prompt_tokens_per_second`           | prefill work, holds across prompt mix |
| `output_tokens_per_s_per_replica` | `generation_tokens_per_second`       | decode work, holds across output mix  |
| `ttft_p95_s`                      | `ttft_p95_seconds` (service-wide)    | a guard: ceil(ready x TTFT / target)  |

and the behaviour (`behavior.scaleUp/scaleDown`): a stabilisation window per direction, a
Percent and a Pods rate limit per period with `selectPolicy: Max`, and one tolerance for both
directions (`behavior.*.tolerance`, Kubernetes 1.33+). The ranges searched are in
`rlscale.training.tune` (rates relative to the profile's replica capacity, so one space fits
every profile). The result is shipped as an ordinary HPA manifest under
`rlscale/policies/manifests/tuned-<profile>.yaml`, with annotations recording where and how it was
tuned, so evaluating `tuned` costs no search, and the same file can be applied to a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlscale.policies.hpa import MANIFEST_DIR, HPAPolicy, config_from_manifest, load_hpa_manifest
from rlscale.profiles.model import ServiceProfile

# Profiles without their own tuned manifest fall back to the 8B one (its targets are per-replica
# signals, so they transfer better than absolute counts would; tune the profile to do better).
GENERIC_TUNED = MANIFEST_DIR / "tuned-llama-3.1-8b-h100.yaml"

# parameter -> (HPA metric name, how its target is written): milli-units for the fractions and
# the seconds, 4 significant digits for the counts and rates
SIGNALS: dict[str, tuple[str, str]] = {
    "queue_per_replica": ("request_queue_size", "plain"),
    "kv_cache_usage": ("kv_cache_usage", "milli"),
    "gpu_utilization": ("gpu_utilization", "plain"),
    "request_rps_per_replica": ("request_rate", "plain"),
    "prompt_tokens_per_s_per_replica": ("prompt_tokens_per_second", "plain"),
    "output_tokens_per_s_per_replica": ("generation_tokens_per_second", "plain"),
    "ttft_p95_s": ("ttft_p95_seconds", "milli"),
}


class TunedRuleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue_per_replica: float | None = Field(default=10.0, gt=0)
    kv_cache_usage: float | None = Field(default=None, gt=0, le=1)
    gpu_utilization: float | None = Field(default=None, gt=0, le=100)
    request_rps_per_replica: float | None = Field(default=None, gt=0)
    prompt_tokens_per_s_per_replica: float | None = Field(default=None, gt=0)
    output_tokens_per_s_per_replica: float | None = Field(default=None, gt=0)
    ttft_p95_s: float | None = Field(default=None, gt=0)
    scale_up_window_s: int = Field(default=0, ge=0, le=3600)
    scale_up_percent: int = Field(default=100, gt=0, le=1000)
    scale_up_pods: int = Field(default=4, gt=0, le=100)
    scale_up_period_s: int = Field(default=15, gt=0, le=1800)
    scale_down_window_s: int = Field(default=300, ge=0, le=3600)
    scale_down_percent: int = Field(default=100, gt=0, le=100)
    scale_down_period_s: int = Field(default=60, gt=0, le=1800)
    tolerance: float = Field(default=0.1, ge=0, lt=1)
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _one_load_signal(self) -> TunedRuleParams:
        # the TTFT guard alone would size a healthy fleet at ~0 (TTFT far below its target)
        if all(getattr(self, p) is None for p in SIGNALS if p != "ttft_p95_s"):
            raise ValueError(
                "at least one load signal must be on (queue, KV cache, GPU, request or token rate)"
            )
        return self

    def signals(self) -> dict[str, float]:
        """The signals that are on, parameter name -> target."""
        return {p: v for p in SIGNALS if (v := getattr(self, p)) is not None}


def _quantity(value: float, form: str) -> str:
    return f"{max(1, round(value * 1000))}m" if form == "milli" else f"{value:.4g}"


def manifest_for(
    params: TunedRuleParams,
    name: str = "llm-inference-tuned",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The HPA manifest (as a dict) of a parameter set."""
    metrics = []
    for p, target in params.signals().items():
        metric, form = SIGNALS[p]
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric},
                    "target": {"type": "AverageValue", "averageValue": _quantity(target, form)},
                },
            }
        )
    tolerance = _quantity(params.tolerance, "milli")
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "llm-inference",
            },
            "minReplicas": params.min_replicas,
            "maxReplicas": params.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": params.scale_up_window_s,
                    "policies": [
                        {
                            "type": "Percent",
                            "value": params.scale_up_percent,
                            "periodSeconds": params.scale_up_period_s,
                        },
                        {
                            "type": "Pods",
                            "value": params.scale_up_pods,
                            "periodSeconds": params.scale_up_period_s,
                        },
                    ],
                    "selectPolicy": "Max",
                    "tolerance": tolerance,
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": params.scale_down_window_s,
                    "policies": [
                        {
                            "type": "Percent",
                            "value": params.scale_down_percent,
                            "periodSeconds": params.scale_down_period_s,
                        }
                    ],
                    "selectPolicy": "Max",
                    "tolerance": tolerance,
                },
            },
        },
    }


def policy_for(params: TunedRuleParams, name: str = "tuned") -> HPAPolicy:
    return HPAPolicy(config_from_manifest(manifest_for(params), "<tuned parameters>"), name=name)


def tuned_manifest_path(profile: ServiceProfile | str) -> Path:
    """The shipped tuned manifest for a profile, or the generic one when it has none."""
    pname = profile if isinstance(profile, str) else profile.name
    own = MANIFEST_DIR / f"tuned-{pname}.yaml"
    return own if own.exists() else GENERIC_TUNED


def load_tuned_policy(profile: ServiceProfile | str, name: str = "tuned") -> HPAPolicy:
    return HPAPolicy(load_hpa_manifest(tuned_manifest_path(profile)), name=name)


def write_manifest(path: str | Path, manifest: dict[str, Any], header: str = "") -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(manifest, sort_keys=False, width=100)
    p.write_text((header.rstrip() + "\n" if header else "") + body)
    return p
