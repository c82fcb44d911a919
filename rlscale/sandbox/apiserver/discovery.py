"""Discovery documents: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>[/<version>]`.

kubectl builds its REST mapping from these (`deploy` -> apps/v1 deployments, `po` -> v1 pods),
and its scale client finds the Scale kind of `deployments/scale` here. kubectl 1.32 first asks
for aggregated discovery (`as=APIGroupDiscoveryList`); answering plain `application/json` makes
client-go fall back to these legacy documents, which is what an apiserver without the aggregated
endpoint does.
"""

from __future__ import annotations

from typing import Any

from rlscale.sandbox.apiserver.resources import (
    SCALE_GROUP,
    SCALE_KIND,
    SCALE_VERSION,
    SERVED,
    ResourceType,
)

KUBERNETES_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-rlscale-sandbox"}

# Groups and versions served, in preference order ("" is the legacy core group under /api).
GROUP_VERSIONS: dict[str, list[str]] = {
    "apps": ["v1"],
    "autoscaling": ["v1"],
    "coordination.k8s.io": ["v1"],
}


def version() -> dict[str, Any]:
    return {
        **KUBERNETES_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(name: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUP_VERSIONS[name]]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_group_list() -> dict[str, Any]:
    groups = []
    for name in GROUP_VERSIONS:
        g = api_group(name)
        del g["kind"], g["apiVersion"]
        groups.append(g)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _entry(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": sorted(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    return entry


def _sub_entry(rt: ResourceType, sub: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"{rt.plural}/{sub}",
        "singularName": "",
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": ["get", "patch", "update"],
    }
    if sub == "scale":
        entry.update({"group": SCALE_GROUP, "version": SCALE_VERSION, "kind": SCALE_KIND})
    return entry


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """The APIResourceList of one group/version, or None if it is not served."""
    if group and version not in GROUP_VERSIONS.get(group, []):
        return None
    if not group and version != "v1":
        return None
    resources = []
    for rt in SERVED:
        if rt.group == group and rt.version == version:
            resources.append(_entry(rt))
            resources.extend(_sub_entry(rt, sub) for sub in rt.subresources)
    gv = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }
