"""Contract tests of the stand-in driven by the preinstalled kubectl (client-go 1.32): discovery,
server-side tables, the scale subresource, patches, watches, deletes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rlscale.sandbox.runner import Sandbox

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def test_kubectl_version_and_api_resources_come_from_discovery(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    assert "Server Version: v1.32" in kubectl(sandbox, "version").stdout
    lines = kubectl(sandbox, "api-resources", "--no-headers").stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows["deployments"][1:] == ["deploy", "apps/v1", "true", "Deployment"]
    assert rows["pods"][1:] == ["po", "v1", "true", "Pod"]
    assert rows["leases"][1:] == ["coordination.k8s.io/v1", "true", "Lease"]
    groups = json.loads(kubectl(sandbox, "get", "--raw", "/apis").stdout)
    assert {g["name"] for g in groups["groups"]} == {"apps", "autoscaling", "coordination.k8s.io"}


def test_kubectl_get_deploy_and_pods_prints_server_side_tables(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    sandbox.wait_for_ready(1, timeout_s=10)
    out = kubectl(sandbox, "get", "deploy,pods").stdout
    deploy_header, deploy_row = out.split("\n\n")[0].splitlines()
    assert deploy_header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert deploy_row.split()[:4] == ["deployment.apps/llm", "1/1", "1", "1"]
    pod_header, pod_row = out.split("\n\n")[1].strip().splitlines()
    assert pod_header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pod_row.split()[0].startswith("pod/llm-") and pod_row.split()[1:4] == [
        "1/1",
        "Running",
        "0",
    ]
    wide = kubectl(sandbox, "get", "pods", "-o", "wide", "--no-headers").stdout.split()
    assert wide[5:7] == ["127.0.0.1", "sandbox-node"]
    names = kubectl(sandbox, "get", "deploy,pods", "-o", "name").stdout.split()
    assert names[0] == "deployment.apps/llm" and names[1].startswith("pod/llm-")


def test_kubectl_get_all_and_label_selectors(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl(sandbox, "get", "all", "--no-headers").stdout
    assert "deployment.apps/llm" in out and "pod/llm-" in out
    assert kubectl(sandbox, "get", "pods", "-l", "app=llm", "-o", "name").stdout.startswith(
        "pod/llm-"
    )
    none = kubectl(sandbox, "get", "pods", "-l", "app=other")
    assert none.stdout == "" and "No resources found in default namespace." in none.stderr


def test_kubectl_get_json_returns_the_stored_object(sandbox: Sandbox, kubectl: Kubectl) -> None:
    d = json.loads(kubectl(sandbox, "get", "deploy", "llm", "-o", "json").stdout)
    assert (d["apiVersion"], d["kind"], d["metadata"]["name"]) == ("apps/v1", "Deployment", "llm")
    assert d["spec"]["replicas"] == 1 and d["metadata"]["generation"] == 1
    pods = json.loads(kubectl(sandbox, "get", "pods", "-o", "json").stdout)
    assert pods["kind"] == "List" and pods["items"][0]["kind"] == "Pod"


def test_kubectl_scale_patches_the_scale_subresource(sandbox: Sandbox, kubectl: Kubectl) -> None:
    sandbox.clear_request_log()
    assert (
        kubectl(sandbox, "scale", "deployment/llm", "--replicas=3").stdout.strip()
        == "deployment.apps/llm scaled"
    )
    (write,) = sandbox.writes()
    assert (write.method, write.path) == (
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/llm/scale",
    )
    assert write.content_type == "application/merge-patch+json"
    assert sandbox.deployment_object()["spec"]["replicas"] == 3
    sandbox.wait_for_ready(3, timeout_s=10)


def test_kubectl_scale_with_a_current_replicas_precondition_uses_get_and_put(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    sandbox.clear_request_log()
    kubectl(sandbox, "scale", "deployment/llm", "--current-replicas=1", "--replicas=2")
    scale_calls = [(r.method, r.status) for r in sandbox.request_log if r.path.endswith("/scale")]
    assert scale_calls == [("GET", 200), ("PUT", 200)]
    failed = kubectl(
        sandbox, "scale", "deployment/llm", "--current-replicas=1", "--replicas=4", check=False
    )
    assert failed.returncode != 0 and "Expected replicas to be 1, was 2" in failed.stderr
    assert sandbox.deployment_object()["spec"]["replicas"] == 2


def test_kubectl_patch_with_merge_json_and_strategic_types(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    kubectl(sandbox, "patch", "deployment", "llm", "--type=merge", "-p", '{"spec":{"replicas":2}}')
    kubectl(
        sandbox,
        "patch",
        "deployment",
        "llm",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/metadata/labels/x","value":"y"}]',
    )
    kubectl(
        sandbox,
        "patch",
        "deployment",
        "llm",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"vllm","env":[{"name":"A","value":"1"}]}]}}}}',
    )
    d = sandbox.deployment_object()
    assert d["spec"]["replicas"] == 2 and d["metadata"]["labels"]["x"] == "y"
    (container,) = d["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("vllm/") and container["env"] == [
        {"name": "VLLM_SERVER_DEV_MODE", "value": "1"},  # merged by name, the template's kept
        {"name": "A", "value": "1"},
    ]
    types = [r.content_type for r in sandbox.writes()]
    assert types == [
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    ]
    bad = kubectl(
        sandbox,
        "patch",
        "deployment",
        "llm",
        "--type=merge",
        "-p",
        '{"spec":{"replicas":-2}}',
        check=False,
    )
    assert (
        bad.returncode != 0
        and "spec.replicas: Invalid value: -2: must be greater than or equal to 0" in bad.stderr
    )


def test_kubectl_get_pods_watch_shows_pods_cold_starting(
    sandbox: Sandbox, kubectl_home: Path
) -> None:
    sandbox.wait_for_ready(1, timeout_s=10)
    binary = shutil.which("kubectl")
    assert binary is not None
    proc = subprocess.Popen(
        [
            binary,
            "--kubeconfig",
            str(sandbox.kubeconfig_path),
            "get",
            "pods",
            "-w",
            "--request-timeout=20s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(kubectl_home)},
    )
    try:
        deadline = time.monotonic() + 10
        while not any(r.query.find("watch=true") >= 0 for r in sandbox.request_log):
            assert time.monotonic() < deadline and proc.poll() is None, (
                "kubectl never started watching"
            )
            time.sleep(0.05)
        sandbox.call(
            lambda s: s.patch(
                *_deploy(sandbox), "application/merge-patch+json", {"spec": {"replicas": 2}}
            )
        )
        sandbox.wait_for_ready(2, timeout_s=10)
        time.sleep(0.3)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    new = [row for row in lines[1:] if row[0] != lines[1][0]]
    states = [(row[1], row[2]) for row in new]
    assert states[0] == ("0/1", "ContainerCreating")
    assert ("0/1", "Running") in states and states[-1] == ("1/1", "Running")


def _deploy(sb: Sandbox) -> tuple[object, str, str]:
    from rlscale.sandbox.apiserver.resources import DEPLOYMENTS

    return DEPLOYMENTS, sb.namespace, sb.deployment


def test_kubectl_delete_pod_leaves_it_terminating_and_the_deployment_replaces_it(
    sandbox: Sandbox, kubectl: Kubectl
) -> None:
    sandbox.wait_for_ready(1, timeout_s=10)
    (pod,) = sandbox.pods()
    name = pod["metadata"]["name"]
    # 120 s of grace is 2 s at time_scale 60: long enough for the next kubectl to see it.
    deleted = kubectl(sandbox, "delete", "pod", name, "--grace-period=120", "--wait=false")
    assert deleted.stdout.strip() == f'pod "{name}" deleted'
    rows = {
        line.split()[0]: line.split()
        for line in kubectl(sandbox, "get", "pods", "--no-headers").stdout.splitlines()
    }
    assert rows[name][2] == "Terminating"
    assert len(rows) == 2  # the replacement is already there
    sandbox.wait_for_ready(1, timeout_s=10)


def test_kubectl_get_events_and_leases(sandbox: Sandbox, kubectl: Kubectl) -> None:
    events = kubectl(sandbox, "get", "events").stdout.splitlines()
    assert events[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert "ScalingReplicaSet" in events[1] and "deployment/llm" in events[1]
    assert "No resources found" in kubectl(sandbox, "get", "leases").stderr


def test_kubectl_create_needs_validate_false_because_openapi_is_not_served(
    sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path
) -> None:
    manifest = tmp_path / "d.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "other"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "other"}},
                    "template": {
                        "metadata": {"labels": {"app": "other"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    },
                },
            }
        )
    )
    refused = kubectl(sandbox, "create", "-f", str(manifest), check=False)
    assert refused.returncode != 0 and "failed to download openapi" in refused.stderr
    created = kubectl(sandbox, "create", "-f", str(manifest), "--validate=false")
    assert created.stdout.strip() == "deployment.apps/other created"
    assert (
        kubectl(sandbox, "delete", "deploy", "other").stdout.strip()
        == 'deployment.apps "other" deleted'
    )
