"""The resource types the stand-in serves, and what the apiserver's registry strategies do to each
on create and update: defaulting, validation, which fields a write may change, `generation`.

Only the fields the controller and kubectl rely on are defaulted and validated; everything else
is stored as sent (the real apiserver would prune unknown fields; we keep them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlscale.sandbox.apiserver.selectors import LabelSelector, selector_from_label_selector
from rlscale.sandbox.apiserver.status import Cause, field_invalid, field_required

Obj = dict[str, Any]

ALL_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


@dataclass(frozen=True)
class ResourceType:
    """One served resource (`apps/v1 deployments`), as discovery lists it."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    # The apiserver accepts a PUT without metadata.resourceVersion (last write wins) for most
    # kinds; Leases insist on one, which is what makes leader election safe.
    allow_unconditional_update: bool = True
    has_generation: bool = False
    # DELETE answers with the object (pods) rather than a Success Status (most kinds).
    return_deleted_object: bool = False
    validate: Callable[[Obj], list[Cause]] = field(default=lambda obj: [], compare=False)
    default: Callable[[Obj], None] = field(default=lambda obj: None, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


def validate_name(name: Any) -> list[Cause]:
    if not name:
        return [field_required("metadata.name", "name or generateName is required")]
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return [
            field_invalid(
                "metadata.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character",
            )
        ]
    return []


def _non_negative_int(obj: Obj, path: str) -> list[Cause]:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return []
        value = value[part]
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int):
        return [field_invalid(path, value, "must be an integer")]
    if value < 0:
        return [field_invalid(path, value, "must be greater than or equal to 0")]
    return []


def _default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            c.setdefault("imagePullPolicy", "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})


def _validate_pod_spec(spec: Any, prefix: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [field_required(prefix)]
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        return [field_required(f"{prefix}.containers")]
    causes = []
    for i, c in enumerate(containers):
        if not isinstance(c, dict) or not c.get("name"):
            causes.append(field_required(f"{prefix}.containers[{i}].name"))
        elif not c.get("image"):
            causes.append(field_required(f"{prefix}.containers[{i}].image"))
    return causes + _non_negative_int({"s": spec}, "s.terminationGracePeriodSeconds")


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    spec.setdefault(
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    )
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    if isinstance(template.get("spec"), dict):
        _default_pod_spec(template["spec"])
    obj.setdefault("status", {})


def _validate_deployment(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [field_required("spec")]
    causes = _non_negative_int(obj, "spec.replicas")
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        causes.append(field_required("spec.selector"))
    else:
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        try:
            matches = selector_from_label_selector(selector).matches(labels)
        except ValueError as e:
            causes.append(field_invalid("spec.selector", selector, str(e)))
        else:
            if not matches:
                causes.append(
                    field_invalid(
                        "spec.template.metadata.labels",
                        labels,
                        "`selector` does not match template `labels`",
                    )
                )
    causes += _validate_pod_spec((spec.get("template") or {}).get("spec"), "spec.template.spec")
    return causes


def _default_pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    _default_pod_spec(spec)
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", "BestEffort")


def _validate_pod(obj: Obj) -> list[Cause]:
    return _validate_pod_spec(obj.get("spec"), "spec")


def _validate_lease(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        return [field_invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")]
    return []


def _validate_event(obj: Obj) -> list[Cause]:
    if not isinstance(obj.get("involvedObject"), dict):
        return [field_required("involvedObject")]
    return []


DEPLOYMENTS = ResourceType(
    group="apps",
    version="v1",
    kind="Deployment",
    plural="deployments",
    singular="deployment",
    short_names=("deploy",),
    categories=("all",),
    subresources=("scale", "status"),
    has_generation=True,
    validate=_validate_deployment,
    default=_default_deployment,
)
PODS = ResourceType(
    group="",
    version="v1",
    kind="Pod",
    plural="pods",
    singular="pod",
    short_names=("po",),
    categories=("all",),
    subresources=("status",),
    return_deleted_object=True,
    validate=_validate_pod,
    default=_default_pod,
)
LEASES = ResourceType(
    group="coordination.k8s.io",
    version="v1",
    kind="Lease",
    plural="leases",
    singular="lease",
    allow_unconditional_update=False,
    validate=_validate_lease,
)
EVENTS = ResourceType(
    group="",
    version="v1",
    kind="Event",
    plural="events",
    singular="event",
    short_names=("ev",),
    validate=_validate_event,
)


def _validate_hpa(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [field_required("spec")]
    causes = []
    if not isinstance(spec.get("scaleTargetRef"), dict):
        causes.append(field_required("spec.scaleTargetRef"))
    max_replicas = spec.get("maxReplicas")
    if not isinstance(max_replicas, int) or max_replicas < 1:
        causes.append(
            field_invalid("spec.maxReplicas", max_replicas, "must be greater than or equal to 1")
        )
    return causes


# Stored so that discovery of autoscaling/v1 is complete and `kubectl get hpa` works; nothing in
# the sandbox acts on an HPA (the controller under test is the autoscaler).
HORIZONTAL_POD_AUTOSCALERS = ResourceType(
    group="autoscaling",
    version="v1",
    kind="HorizontalPodAutoscaler",
    plural="horizontalpodautoscalers",
    singular="horizontalpodautoscaler",
    short_names=("hpa",),
    categories=("all",),
    subresources=("status",),
    validate=_validate_hpa,
)

# Cluster-scoped and read-only over HTTP: written by the sandbox's node pool (sandbox/nodes.py),
# read by `kubectl get nodes` and cold-start fits that look at node creation times.
NODES = ResourceType(
    group="",
    version="v1",
    kind="Node",
    plural="nodes",
    singular="node",
    namespaced=False,
    short_names=("no",),
    verbs=("get", "list", "watch"),
    subresources=("status",),
)

SERVED: tuple[ResourceType, ...] = (
    DEPLOYMENTS,
    PODS,
    LEASES,
    EVENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    NODES,
)
BY_KEY: dict[tuple[str, str], ResourceType] = {r.key: r for r in SERVED}

# The Scale subresource's own type (autoscaling/v1), listed in discovery as deployments/scale.
SCALE_GROUP, SCALE_VERSION, SCALE_KIND = "autoscaling", "v1", "Scale"


def scale_selector(deployment: Obj) -> str:
    """`status.selector` of the Scale: the Deployment's selector as a label-selector string."""
    selector = (deployment.get("spec") or {}).get("selector") or {}
    return LabelSelector.from_label_selector(selector).to_string()
