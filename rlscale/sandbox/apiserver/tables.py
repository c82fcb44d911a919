"""Server-side printing: the `meta.k8s.io Table` that `kubectl get` asks for
(`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the columns the real apiserver
prints for each kind (pods: NAME READY STATUS RESTARTS AGE; deployments: NAME READY UP-TO-DATE
AVAILABLE AGE; ...). Rows carry the object as PartialObjectMetadata unless `includeObject` says
otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rlscale.sandbox.apiserver.resources import (
    DEPLOYMENTS,
    EVENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    LEASES,
    NODES,
    PODS,
    Obj,
    ResourceType,
)

_NAME_COL = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE_COL = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
    "priority": 0,
}


def _col(
    name: str, type_: str = "string", priority: int = 0, description: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "format": "",
        "description": description or name,
        "priority": priority,
    }


COLUMNS: dict[tuple[str, str], list[dict[str, Any]]] = {
    PODS.key: [
        _NAME_COL,
        _col(
            "Ready", description="The aggregate readiness state of this pod for accepting traffic."
        ),
        _col("Status", description="The aggregate status of the containers in this pod."),
        _col(
            "Restarts",
            description="The number of times the containers in this pod have been restarted.",
        ),
        _AGE_COL,
        _col("IP", priority=1, description="The IP address assigned to the pod"),
        _col("Node", priority=1, description="The name of the node the pod is assigned to"),
        _col("Nominated Node", priority=1),
        _col("Readiness Gates", priority=1),
    ],
    DEPLOYMENTS.key: [
        _NAME_COL,
        _col("Ready", description="Number of the pod with ready state"),
        _col(
            "Up-to-date",
            "integer",
            description="Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        _col(
            "Available",
            "integer",
            description="Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        _AGE_COL,
        _col("Containers", priority=1),
        _col("Images", priority=1),
        _col("Selector", priority=1),
    ],
    LEASES.key: [_NAME_COL, _col("Holder"), _AGE_COL],
    NODES.key: [
        _NAME_COL,
        _col("Status", description="The status of the node"),
        _col("Roles", description="The roles of the node"),
        _AGE_COL,
        _col("Version", description="Kubelet Version reported by the node."),
    ],
    HORIZONTAL_POD_AUTOSCALERS.key: [
        _NAME_COL,
        _col("Reference"),
        _col("Targets"),
        _col("MinPods", "integer"),
        _col("MaxPods", "integer"),
        _col("Replicas", "integer"),
        _AGE_COL,
    ],
    EVENTS.key: [
        _col("Last Seen"),
        _col("Type"),
        _col("Reason"),
        _col("Object"),
        _col("Message"),
    ],
}


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, for the AGE column."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def _age(obj: Obj, now: datetime) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    created = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((now - created).total_seconds())


def pod_status_reason(pod: Obj) -> str:
    """The STATUS column: kubectl's printPod logic, for the states the sandbox produces."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_cells(pod: Obj, now: datetime) -> list[Any]:
    status = pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount", 0)) for cs in statuses)
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(containers)}",
        pod_status_reason(pod),
        restarts,
        _age(pod, now),
        status.get("podIP") or "<none>",
        (pod.get("spec") or {}).get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _deployment_cells(d: Obj, now: datetime) -> list[Any]:
    spec, status = d.get("spec") or {}, d.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    selector = spec.get("selector") or {}
    return [
        d["metadata"]["name"],
        f"{int(status.get('readyReplicas', 0))}/{int(spec.get('replicas', 0))}",
        int(status.get("updatedReplicas", 0)),
        int(status.get("availableReplicas", 0)),
        _age(d, now),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())),
    ]


def _lease_cells(lease: Obj, now: datetime) -> list[Any]:
    return [
        lease["metadata"]["name"],
        (lease.get("spec") or {}).get("holderIdentity") or "",
        _age(lease, now),
    ]


def _node_cells(node: Obj, now: datetime) -> list[Any]:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )
    return [
        node["metadata"]["name"],
        "Ready" if ready else "NotReady",
        "<none>",
        _age(node, now),
        ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""),
    ]


def _hpa_cells(hpa: Obj, now: datetime) -> list[Any]:
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    target = spec.get("targetCPUUtilizationPercentage")
    current = status.get("currentCPUUtilizationPercentage")
    targets = (
        f"cpu: {'<unknown>' if current is None else f'{current}%'}/{target}%"
        if target
        else "<none>"
    )
    return [
        hpa["metadata"]["name"],
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        targets,
        int(spec.get("minReplicas", 1)),
        int(spec.get("maxReplicas", 0)),
        int(status.get("currentReplicas", 0)),
        _age(hpa, now),
    ]


def _event_cells(ev: Obj, now: datetime) -> list[Any]:
    obj = ev.get("involvedObject") or {}
    last = (
        ev.get("lastTimestamp")
        or ev.get("eventTime")
        or (ev.get("metadata") or {}).get("creationTimestamp")
    )
    seen = "<unknown>"
    if isinstance(last, str) and len(last) >= 19:
        t = datetime.strptime(last[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        seen = human_duration((now - t).total_seconds())
    return [
        seen,
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}",
        ev.get("message", ""),
    ]


_CELLS = {
    PODS.key: _pod_cells,
    DEPLOYMENTS.key: _deployment_cells,
    LEASES.key: _lease_cells,
    NODES.key: _node_cells,
    EVENTS.key: _event_cells,
    HORIZONTAL_POD_AUTOSCALERS.key: _hpa_cells,
}


def row(rt: ResourceType, obj: Obj, include_object: str, now: datetime) -> dict[str, Any]:
    r: dict[str, Any] = {"cells": _CELLS[rt.key](obj, now)}
    if include_object == "Object":
        r["object"] = obj
    elif include_object != "None":
        r["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {},
        }
    return r


def table(
    rt: ResourceType,
    objects: list[Obj],
    *,
    api_version: str,
    resource_version: str | None,
    include_object: str = "Metadata",
    with_columns: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    out: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version} if resource_version else {},
        "columnDefinitions": COLUMNS[rt.key] if with_columns else None,
        "rows": [row(rt, o, include_object, now) for o in objects],
    }
    return out
