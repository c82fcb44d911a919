"""Tuned rule: the best HPA a careful operator would configure for this service.

It is an HPA (`rlscale.policies.hpa`) whose targets and windows were searched on *training*
workloads (`rlscale tune`), scored by cost subject to SLO attainment >= the
target. The search space (`TunedRuleParams`):

| parameter                   | range                          | HPA field                                  |
|-----------------------------|--------------------------------|--------------------------------------------|
| `queue_per_replica`         | 0.5 .. 50 (log)                | Pods `request_queue_size` averageValue     |
| `kv_cache_usage`            | 0.03 .. 0.9 (log), or off      | Pods `kv_cache_usage` averageValue         |
| `gpu_utilization`           | 80 / 90 / 95 / 99, or off      | Pods `gpu_utilization` averageValue        |
| `scale_up_window_s`         | 0 / 15 / 30 / 60               | behavior.scaleUp.stabilizationWindowSeconds |
| `scale_down_window_s`       | 0 / 60 / 120 / 300 / 600       | behavior.scaleDown.stabilizationWindowSeconds |
| `scale_down_percent`        | 10 / 25 / 50 / 100 per 60 s    | behavior.scaleDown.policies (Percent)      |

Scale-up keeps the HPA default rate (+100 % or +4 pods per 15 s, whichever is more). The result
is shipped as an ordinary HPA manifest under `rlscale/policies/manifests/tuned-<profile>.yaml`, with
annotations recording where and how it was tuned, so evaluating `tuned` costs no search, and the
same file can be applied to a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from rlscale.policies.hpa import MANIFEST_DIR, HPAPolicy, config_from_manifest, load_hpa_manifest
from rlscale.profiles.model import ServiceProfile

# Profiles without their own tuned manifest fall back to the 8B one (its targets are per-replica
# signals, so they transfer better than absolute counts would; tune the profile to do better).
GENERIC_TUNED = MANIFEST_DIR / "tuned-llama-3.1-8b-h100.yaml"


class TunedRuleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue_per_replica: float = Field(default=10.0, gt=0)
    kv_cache_usage: float | None = Field(default=None, gt=0, le=1)
    gpu_utilization: float | None = Field(default=None, gt=0, le=100)
    scale_up_window_s: int = Field(default=0, ge=0, le=3600)
    scale_down_window_s: int = Field(default=300, ge=0, le=3600)
    scale_down_percent: int = Field(default=100, gt=0, le=100)
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=20, ge=1)


def manifest_for(
    params: TunedRuleParams,
    name: str = "llm-inference-tuned",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The HPA manifest (as a dict) of a parameter set."""
    metrics = [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "request_queue_size"},
                "target": {
                    "type": "AverageValue",
                    "averageValue": f"{params.queue_per_replica:.4g}",
                },
            },
        },
    ]
    if params.kv_cache_usage is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "kv_cache_usage"},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": f"{round(params.kv_cache_usage * 1000)}m",
                    },
                },
            }
        )
    if params.gpu_utilization is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "gpu_utilization"},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": f"{params.gpu_utilization:g}",
                    },
                },
            }
        )
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
                        {"type": "Percent", "value": 100, "periodSeconds": 15},
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                    ],
                    "selectPolicy": "Max",
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": params.scale_down_window_s,
                    "policies": [
                        {"type": "Percent", "value": params.scale_down_percent, "periodSeconds": 60}
                    ],
                    "selectPolicy": "Max",
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
