"""Contract tests of the stand-in API server, driven by the official `kubernetes` Python client over
real HTTP. Each pins one documented behaviour of the real apiserver that the controller relies on.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from rlscale.sandbox.runner import Sandbox

NS = "default"
DEPLOY = "llm"


def status_body(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


def raw(
    sb: Sandbox,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(sb.api_url + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def deployment_body(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "img"}]},
            },
        },
    }


def pod_body(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "img"}]},
    }


# discovery ---------------------------------------------------------------------------------


def test_discovery_lists_the_served_groups_resources_and_the_scale_subresource(
    api: k8s.ApiClient,
) -> None:
    assert k8s.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {
        g.name: g.preferred_version.group_version
        for g in k8s.ApisApi(api).get_api_versions().groups
    }
    assert groups == {
        "apps": "apps/v1",
        "autoscaling": "autoscaling/v1",
        "coordination.k8s.io": "coordination.k8s.io/v1",
    }
    apps = {r.name: r for r in k8s.AppsV1Api(api).get_api_resources().resources}
    assert apps["deployments"].short_names == ["deploy"] and apps["deployments"].namespaced
    assert (
        apps["deployments/scale"].group,
        apps["deployments/scale"].version,
        apps["deployments/scale"].kind,
    ) == (
        "autoscaling",
        "v1",
        "Scale",
    )
    assert sorted(apps["deployments/scale"].verbs) == ["get", "patch", "update"]
    core = {r.name: r for r in k8s.CoreV1Api(api).get_api_resources().resources}
    assert {"pods", "pods/status", "events"} <= set(core) and core["pods"].short_names == ["po"]
    leases = {r.name for r in k8s.CoordinationV1Api(api).get_api_resources().resources}
    assert leases == {"leases"}
    assert k8s.VersionApi(api).get_code().git_version.startswith("v1.32")


def test_unknown_paths_are_404_and_openapi_is_not_served(sandbox: Sandbox) -> None:
    for path in (
        "/apis/batch/v1",
        "/api/v1/namespaces/default/secrets",
        "/openapi/v2",
        "/openapi/v3",
    ):
        code, _, body = raw(sandbox, "GET", path)
        assert code == 404, path
        assert json.loads(body)["kind"] == "Status"


# object metadata ----------------------------------------------------------------------------


def test_create_sets_uid_creation_timestamp_generation_and_resource_version(
    api: k8s.ApiClient,
) -> None:
    apps = k8s.AppsV1Api(api)
    before = datetime.now(UTC).replace(microsecond=0)
    d = apps.create_namespaced_deployment(NS, deployment_body("web"))
    assert len(d.metadata.uid) == 36
    assert d.metadata.creation_timestamp >= before
    assert d.metadata.generation == 1
    assert int(d.metadata.resource_version) > 0
    assert d.spec.strategy.type == "RollingUpdate"  # defaulted by the server
    assert d.spec.template.spec.termination_grace_period_seconds == 30


def test_resource_version_increases_across_kinds_and_lists_report_the_latest(
    api: k8s.ApiClient,
) -> None:
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    rv1 = int(
        apps.create_namespaced_deployment(
            NS, deployment_body("a", replicas=0)
        ).metadata.resource_version
    )
    rv2 = int(core.create_namespaced_pod(NS, pod_body("p", {"x": "y"})).metadata.resource_version)
    rv3 = int(
        apps.patch_namespaced_deployment(
            "a", NS, {"metadata": {"labels": {"k": "v"}}}
        ).metadata.resource_version
    )
    assert rv1 < rv2 < rv3
    assert int(core.list_namespaced_pod(NS).metadata.resource_version) >= rv3


def test_get_of_a_missing_object_is_404_not_found_status(api: k8s.ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        k8s.AppsV1Api(api).read_namespaced_deployment("nope", NS)
    assert e.value.status == 404
    body = status_body(e.value)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "NotFound"
    assert body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_create_with_an_existing_name_is_409_already_exists(api: k8s.ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        k8s.AppsV1Api(api).create_namespaced_deployment(NS, deployment_body(DEPLOY))
    assert e.value.status == 409 and status_body(e.value)["reason"] == "AlreadyExists"


def test_invalid_objects_are_422_invalid_with_field_causes(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    body = deployment_body("bad", replicas=-1)
    body["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment(NS, body)
    assert e.value.status == 422
    status = status_body(e.value)
    assert status["reason"] == "Invalid"
    fields = {c["field"] for c in status["details"]["causes"]}
    assert fields == {"spec.replicas", "spec.template.metadata.labels"}
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment(
            NS, {**deployment_body("x"), "metadata": {"name": "Not_A_Name"}}
        )
    assert (
        e.value.status == 422
        and status_body(e.value)["details"]["causes"][0]["field"] == "metadata.name"
    )


def test_malformed_json_body_is_400_bad_request(sandbox: Sandbox) -> None:
    code, _, body = raw(sandbox, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", b"{not json")
    assert code == 400 and json.loads(body)["reason"] == "BadRequest"


# optimistic concurrency ---------------------------------------------------------------------


def test_put_with_stale_resource_version_gets_409_conflict(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    d = apps.read_namespaced_deployment(DEPLOY, NS)
    d.metadata.labels["first"] = "write"
    apps.replace_namespaced_deployment(DEPLOY, NS, d)  # d still carries the old resourceVersion
    d.metadata.labels["second"] = "write"
    with pytest.raises(ApiException) as e:
        apps.replace_namespaced_deployment(DEPLOY, NS, d)
    assert e.value.status == 409
    status = status_body(e.value)
    assert status["reason"] == "Conflict"
    assert (
        "the object has been modified; please apply your changes to the latest version"
        in status["message"]
    )


def test_put_without_resource_version_overwrites_a_deployment_but_a_lease_requires_one(
    api: k8s.ApiClient,
) -> None:
    apps, coord = k8s.AppsV1Api(api), k8s.CoordinationV1Api(api)
    d = apps.read_namespaced_deployment(DEPLOY, NS)
    d.metadata.resource_version = None
    d.metadata.labels["unconditional"] = "yes"
    assert (
        apps.replace_namespaced_deployment(DEPLOY, NS, d).metadata.labels["unconditional"] == "yes"
    )
    lease = coord.create_namespaced_lease(
        NS, {"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}
    )
    lease.metadata.resource_version = None
    with pytest.raises(ApiException) as e:
        coord.replace_namespaced_lease("l", NS, lease)
    assert e.value.status == 422
    assert (
        "metadata.resourceVersion: Invalid value: 0: must be specified for an update"
        in status_body(e.value)["message"]
    )


def test_patch_carrying_a_stale_resource_version_gets_409_and_a_current_one_applies(
    api: k8s.ApiClient,
) -> None:
    apps = k8s.AppsV1Api(api)
    rv = apps.read_namespaced_deployment(DEPLOY, NS).metadata.resource_version
    apps.patch_namespaced_deployment(DEPLOY, NS, {"metadata": {"labels": {"bump": "1"}}})
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment(
            DEPLOY,
            NS,
            {"metadata": {"resourceVersion": rv, "labels": {"late": "1"}}},
            _content_type="application/merge-patch+json",
        )
    assert e.value.status == 409 and status_body(e.value)["reason"] == "Conflict"
    current = apps.read_namespaced_deployment(DEPLOY, NS).metadata.resource_version
    patched = apps.patch_namespaced_deployment(
        DEPLOY, NS, {"metadata": {"resourceVersion": current, "labels": {"ok": "1"}}}
    )
    assert patched.metadata.labels["ok"] == "1" and int(patched.metadata.resource_version) > int(
        current
    )


def test_a_no_op_update_keeps_the_resource_version(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    d = apps.read_namespaced_deployment(DEPLOY, NS)
    again = apps.replace_namespaced_deployment(DEPLOY, NS, d)
    assert again.metadata.resource_version == d.metadata.resource_version
    assert again.metadata.generation == d.metadata.generation


# scale subresource --------------------------------------------------------------------------


def test_scale_subresource_get_returns_an_autoscaling_v1_scale(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    sandbox.wait_for_ready(1, timeout_s=10)
    scale = k8s.AppsV1Api(api).read_namespaced_deployment_scale(DEPLOY, NS)
    assert (scale.kind, scale.api_version) == ("Scale", "autoscaling/v1")
    assert scale.spec.replicas == 1 and scale.status.replicas == 1
    assert scale.status.selector == "app=llm"
    d = k8s.AppsV1Api(api).read_namespaced_deployment(DEPLOY, NS)
    assert (scale.metadata.uid, scale.metadata.resource_version) == (
        d.metadata.uid,
        d.metadata.resource_version,
    )


def test_scale_subresource_put_sets_spec_replicas_and_bumps_generation(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    gen = apps.read_namespaced_deployment(DEPLOY, NS).metadata.generation
    scale = apps.read_namespaced_deployment_scale(DEPLOY, NS)
    scale.spec.replicas = 3
    out = apps.replace_namespaced_deployment_scale(DEPLOY, NS, scale)
    assert out.spec.replicas == 3
    d = apps.read_namespaced_deployment(DEPLOY, NS)
    assert d.spec.replicas == 3 and d.metadata.generation == gen + 1


def test_scale_subresource_put_with_a_stale_resource_version_gets_409_conflict(
    api: k8s.ApiClient,
) -> None:
    apps = k8s.AppsV1Api(api)
    scale = apps.read_namespaced_deployment_scale(DEPLOY, NS)
    apps.patch_namespaced_deployment(DEPLOY, NS, {"metadata": {"labels": {"someone": "else"}}})
    scale.spec.replicas = 5
    with pytest.raises(ApiException) as e:
        apps.replace_namespaced_deployment_scale(DEPLOY, NS, scale)
    assert e.value.status == 409 and status_body(e.value)["reason"] == "Conflict"
    assert apps.read_namespaced_deployment(DEPLOY, NS).spec.replicas == 1


@pytest.mark.parametrize(
    ("body", "content_type", "sent_as"),
    [
        ({"spec": {"replicas": 2}}, None, "application/strategic-merge-patch+json"),
        ({"spec": {"replicas": 2}}, "application/merge-patch+json", "application/merge-patch+json"),
        (
            [{"op": "replace", "path": "/spec/replicas", "value": 2}],
            None,
            "application/json-patch+json",
        ),
    ],
)
def test_scale_subresource_patch_in_each_content_type_the_client_sends(
    api: k8s.ApiClient, sandbox: Sandbox, body: Any, content_type: str | None, sent_as: str
) -> None:
    kwargs = {"_content_type": content_type} if content_type else {}
    out = k8s.AppsV1Api(api).patch_namespaced_deployment_scale(DEPLOY, NS, body, **kwargs)
    assert out.spec.replicas == 2
    (patch,) = [r for r in sandbox.request_log if r.method == "PATCH"]
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}/scale"
    assert patch.content_type == sent_as


def test_negative_replicas_is_422_invalid_through_every_write_path(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    attempts: list[Callable[[], object]] = [
        lambda: apps.patch_namespaced_deployment_scale(DEPLOY, NS, {"spec": {"replicas": -1}}),
        lambda: apps.replace_namespaced_deployment_scale(
            DEPLOY, NS, {"metadata": {"name": DEPLOY}, "spec": {"replicas": -1}}
        ),
        lambda: apps.patch_namespaced_deployment(DEPLOY, NS, {"spec": {"replicas": -1}}),
    ]
    for attempt in attempts:
        with pytest.raises(ApiException) as e:
            attempt()
        assert e.value.status == 422
        status = status_body(e.value)
        assert status["reason"] == "Invalid"
        assert status["details"]["causes"][0]["field"] == "spec.replicas"
        assert "must be greater than or equal to 0" in status["message"]
    scale_err = status_body(pytest.raises(ApiException, attempts[0]).value)
    assert scale_err["message"].startswith('Scale.autoscaling "llm" is invalid')
    assert apps.read_namespaced_deployment(DEPLOY, NS).spec.replicas == 1


def test_unsupported_patch_content_type_is_415(api: k8s.ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        k8s.AppsV1Api(api).patch_namespaced_deployment(
            DEPLOY, NS, {"spec": {"replicas": 2}}, _content_type="application/apply-patch+yaml"
        )
    assert e.value.status == 415 and status_body(e.value)["reason"] == "UnsupportedMediaType"


def test_json_patch_whose_test_operation_fails_is_422_and_changes_nothing(
    api: k8s.ApiClient,
) -> None:
    apps = k8s.AppsV1Api(api)
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment(
            DEPLOY,
            NS,
            [
                {"op": "test", "path": "/spec/replicas", "value": 7},
                {"op": "replace", "path": "/spec/replicas", "value": 2},
            ],
        )
    assert e.value.status == 422
    assert apps.read_namespaced_deployment(DEPLOY, NS).spec.replicas == 1


# status and generation ------------------------------------------------------------------


def test_status_writes_do_not_bump_generation_and_main_writes_cannot_change_status(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    apps = k8s.AppsV1Api(api)
    sandbox.wait_for_ready(1, timeout_s=10)
    d = apps.read_namespaced_deployment(DEPLOY, NS)
    assert d.status.observed_generation == d.metadata.generation == 1
    assert (d.status.replicas, d.status.ready_replicas, d.status.available_replicas) == (1, 1, 1)
    apps.patch_namespaced_deployment(DEPLOY, NS, {"status": {"readyReplicas": 99}})
    assert apps.read_namespaced_deployment(DEPLOY, NS).status.ready_replicas == 1
    apps.patch_namespaced_deployment_status(
        DEPLOY, NS, {"spec": {"replicas": 9}, "status": {"readyReplicas": 1}}
    )
    after = apps.read_namespaced_deployment(DEPLOY, NS)
    assert after.spec.replicas == 1 and after.metadata.generation == 1


def test_observed_generation_catches_up_after_a_scale(api: k8s.ApiClient, sandbox: Sandbox) -> None:
    apps = k8s.AppsV1Api(api)
    apps.patch_namespaced_deployment_scale(DEPLOY, NS, {"spec": {"replicas": 2}})
    sandbox.wait_for(
        lambda: apps.read_namespaced_deployment(DEPLOY, NS).status.observed_generation == 2,
        timeout_s=5,
    )
    sandbox.wait_for_ready(2, timeout_s=10)
    status = apps.read_namespaced_deployment(DEPLOY, NS).status
    assert (
        status.replicas,
        status.ready_replicas,
        status.available_replicas,
        status.updated_replicas,
    ) == (2, 2, 2, 2)


# pods: list, selectors, delete ----------------------------------------------------------


def test_pod_list_filters_by_label_selector(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod_body("a", {"role": "x", "env": "prod"}))
    core.create_namespaced_pod(NS, pod_body("b", {"role": "y", "env": "dev"}))
    core.create_namespaced_pod(NS, pod_body("c", {"role": "x"}))

    def names(selector: str) -> list[str]:
        items = core.list_namespaced_pod(NS, label_selector=selector).items
        return sorted(p.metadata.name for p in items if p.metadata.name in ("a", "b", "c"))

    assert names("role=x") == ["a", "c"]
    assert names("role!=x") == ["b"]
    assert names("env in (prod,dev)") == ["a", "b"]
    assert names("env notin (prod)") == ["b", "c"]
    assert names("env") == ["a", "b"]
    assert names("!env") == ["c"]
    assert names("role=x,env=prod") == ["a"]
    by_field = core.list_namespaced_pod(NS, field_selector="metadata.name=b").items
    assert [p.metadata.name for p in by_field] == ["b"]
    deployment_pods = core.list_namespaced_pod(NS, label_selector="app=llm").items
    assert len(deployment_pods) == 1
    assert [
        p.metadata.name for p in core.list_pod_for_all_namespaces(label_selector="role=y").items
    ] == ["b"]


def test_bad_label_selector_is_400(api: k8s.ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        k8s.CoreV1Api(api).list_namespaced_pod(NS, label_selector="app=(")
    assert e.value.status == 400


def test_list_with_limit_pages_with_a_continue_token(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    for i in range(5):
        core.create_namespaced_pod(NS, pod_body(f"page-{i}", {"paged": "yes"}))
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_pod(NS, label_selector="paged=yes", limit=2, _continue=token)
        seen += [p.metadata.name for p in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 5 - len(seen)
    assert seen == [f"page-{i}" for i in range(5)] and pages == 3


def test_deleting_a_pod_marks_it_terminating_until_its_grace_period_passes(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod_body("graceful", {"x": "y"}))
    deleted = core.delete_namespaced_pod(
        "graceful", NS, grace_period_seconds=60
    )  # 1 s at time_scale 60
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 60
    assert core.read_namespaced_pod("graceful", NS).metadata.deletion_timestamp is not None
    sandbox.wait_for(
        lambda: "graceful" not in {p["metadata"]["name"] for p in sandbox.all_pods()}, timeout_s=5
    )
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("graceful", NS)
    assert e.value.status == 404


def test_deleting_a_pod_with_zero_grace_removes_it_at_once_and_other_kinds_answer_a_success_status(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod_body("now", {"x": "y"}))
    deleted = core.delete_namespaced_pod("now", NS, grace_period_seconds=0)
    assert deleted.kind == "Pod" and deleted.metadata.name == "now"  # pods answer with the object
    with pytest.raises(ApiException):
        core.read_namespaced_pod("now", NS)
    k8s.AppsV1Api(api).create_namespaced_deployment(NS, deployment_body("gone", replicas=0))
    code, _, body = raw(sandbox, "DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/gone")
    status = json.loads(body)
    assert code == 200 and status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"]["name"] == "gone" and status["details"]["group"] == "apps"


def test_delete_with_a_stale_resource_version_precondition_is_409(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    pod = core.create_namespaced_pod(NS, pod_body("pre", {"x": "y"}))
    core.patch_namespaced_pod("pre", NS, {"metadata": {"labels": {"changed": "1"}}})
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_pod(
            "pre",
            NS,
            body=k8s.V1DeleteOptions(
                preconditions=k8s.V1Preconditions(resource_version=pod.metadata.resource_version)
            ),
        )
    assert e.value.status == 409


# watch ---------------------------------------------------------------------------------------


def test_watch_is_newline_delimited_json_events(sandbox: Sandbox) -> None:
    req = urllib.request.Request(
        f"{sandbox.api_url}/api/v1/namespaces/{NS}/pods?watch=true&timeoutSeconds=5"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        assert r.headers["Transfer-Encoding"] == "chunked"
        event = json.loads(r.readline())  # one event per line, sent as it happens
    assert set(event) == {"type", "object"}
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Pod"


def test_watch_streams_added_modified_and_deleted_events(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod_body("w", {"watched": "yes"}))
    core.patch_namespaced_pod("w", NS, {"metadata": {"annotations": {"a": "b"}}})
    core.delete_namespaced_pod("w", NS, grace_period_seconds=0)
    w = k8s_watch.Watch()
    events = []
    for e in w.stream(
        core.list_namespaced_pod,
        NS,
        label_selector="watched=yes",
        resource_version=rv,
        timeout_seconds=2,
    ):
        events.append((e["type"], e["object"].metadata.name))
        if e["type"] == "DELETED":
            w.stop()
    assert events[0] == ("ADDED", "w") and events[-1] == ("DELETED", "w")
    assert ("MODIFIED", "w") in events


def test_watch_resumes_from_a_resource_version_with_only_later_events(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod_body("before", {"resume": "yes"}))
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod_body("after", {"resume": "yes"}))
    w = k8s_watch.Watch()
    events = []
    for e in w.stream(
        core.list_namespaced_pod,
        NS,
        label_selector="resume=yes",
        resource_version=rv,
        timeout_seconds=5,
    ):
        events.append(
            (e["type"], e["object"].metadata.name, int(e["object"].metadata.resource_version))
        )
        w.stop()
    assert events[0][:2] == ("ADDED", "after") and events[0][2] > int(rv)


def test_watch_without_a_resource_version_starts_with_the_current_state(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod_body("existing", {"state": "yes"}))
    w = k8s_watch.Watch()
    first = next(
        iter(w.stream(core.list_namespaced_pod, NS, label_selector="state=yes", timeout_seconds=5))
    )
    w.stop()
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "existing")


def test_watch_from_a_compacted_resource_version_gets_410_expired(
    make_sandbox: Callable[..., Sandbox], client_for: Callable[[Sandbox], k8s.ApiClient]
) -> None:
    sb = make_sandbox(history_limit=5, replicas=0)
    core = k8s.CoreV1Api(client_for(sb))
    old_rv = core.list_namespaced_pod(NS).metadata.resource_version
    for i in range(8):
        core.create_namespaced_pod(NS, pod_body(f"churn-{i}", {"c": "y"}))
    with pytest.raises(ApiException) as e:
        list(
            k8s_watch.Watch().stream(
                core.list_namespaced_pod, NS, resource_version=old_rv, timeout_seconds=5
            )
        )
    assert e.value.status == 410 and "Expired" in e.value.reason
    # On the wire: HTTP 200, then one ERROR event carrying the 410 Status, as the apiserver sends it.
    code, _, body = raw(sb, "GET", f"/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={old_rv}")
    event = json.loads(body.decode().splitlines()[0])
    assert code == 200 and event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


def test_watch_with_a_selector_sends_deleted_when_an_object_stops_matching(
    api: k8s.ApiClient,
) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod_body("mover", {"team": "a"}))
    rv = core.read_namespaced_pod("mover", NS).metadata.resource_version
    core.patch_namespaced_pod("mover", NS, {"metadata": {"labels": {"team": "b"}}})
    core.patch_namespaced_pod("mover", NS, {"metadata": {"labels": {"team": "a"}}})
    w = k8s_watch.Watch()
    events = []
    for e in w.stream(
        core.list_namespaced_pod,
        NS,
        label_selector="team=a",
        resource_version=rv,
        timeout_seconds=5,
    ):
        events.append(e["type"])
        if len(events) == 2:
            w.stop()
    assert events == ["DELETED", "ADDED"]


def test_watch_of_deployments_sees_the_controller_update_status(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    rv = apps.read_namespaced_deployment(DEPLOY, NS).metadata.resource_version
    apps.patch_namespaced_deployment_scale(DEPLOY, NS, {"spec": {"replicas": 2}})
    w = k8s_watch.Watch()
    ready = 0
    for e in w.stream(apps.list_namespaced_deployment, NS, resource_version=rv, timeout_seconds=10):
        ready = e["object"].status.ready_replicas or 0
        if ready == 2:
            w.stop()
    assert ready == 2


# leases and leader election -----------------------------------------------------------------


def test_lease_create_get_replace_and_patch(api: k8s.ApiClient) -> None:
    coord = k8s.CoordinationV1Api(api)
    now = datetime.now(UTC)
    created = coord.create_namespaced_lease(
        NS,
        k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name="rlscale-leader"),
            spec=k8s.V1LeaseSpec(
                holder_identity="a", lease_duration_seconds=15, acquire_time=now, renew_time=now
            ),
        ),
    )
    got = coord.read_namespaced_lease("rlscale-leader", NS)
    assert got.spec.holder_identity == "a" and got.spec.lease_duration_seconds == 15
    assert abs((got.spec.renew_time - now).total_seconds()) < 1e-3
    got.spec.holder_identity = "b"
    replaced = coord.replace_namespaced_lease("rlscale-leader", NS, got)
    assert replaced.spec.holder_identity == "b"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as e:
        coord.replace_namespaced_lease("rlscale-leader", NS, got)  # got's version is stale now
    assert e.value.status == 409
    patched = coord.patch_namespaced_lease("rlscale-leader", NS, {"spec": {"holderIdentity": "c"}})
    assert patched.spec.holder_identity == "c"
    with pytest.raises(ApiException) as e:
        coord.patch_namespaced_lease("rlscale-leader", NS, {"spec": {"leaseDurationSeconds": 0}})
    assert e.value.status == 422


@pytest.mark.slow
def test_leader_election_with_the_official_client_elects_one_leader_and_steps_down_when_renewals_fail(
    sandbox: Sandbox, client_for: Callable[[Sandbox], k8s.ApiClient]
) -> None:
    from kubernetes import config as k8s_config
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    previous = k8s.Configuration._default
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(sandbox.kubeconfig_path), client_configuration=cfg)
    k8s.Configuration.set_default(cfg)  # LeaseLock builds its API object from the default client
    started, stopped = threading.Event(), threading.Event()

    def config(
        identity: str, on_started: Callable[[], None], on_stopped: Callable[[], None]
    ) -> Any:
        # Timings at or above 1 s: below that the client's config check calls sys.exit, which a
        # thread swallows, and nobody is ever elected.
        return electionconfig.Config(
            LeaseLock("rlscale-controller", NS, identity), 4, 3, 1.5, on_started, on_stopped
        )

    leader = threading.Thread(
        target=leaderelection.LeaderElection(config("a", started.set, stopped.set)).run, daemon=True
    )
    try:
        leader.start()
        assert started.wait(5), "candidate a was never elected"
        lease = k8s.CoordinationV1Api(client_for(sandbox)).read_namespaced_lease(
            "rlscale-controller", NS
        )
        assert lease.spec.holder_identity == "a" and lease.spec.lease_duration_seconds == 4
        # A second candidate finds the lease held and not expired: it does not take over.
        follower = leaderelection.LeaderElection(config("b", lambda: None, lambda: None))
        assert follower.try_acquire_or_renew() is False
        coord = k8s.CoordinationV1Api(client_for(sandbox))

        def renewed() -> bool:
            now = coord.read_namespaced_lease("rlscale-controller", NS)
            return now.spec.holder_identity == "a" and now.spec.renew_time > lease.spec.renew_time

        sandbox.wait_for(renewed, timeout_s=5, poll_s=0.2)  # a keeps renewing every retry period
        # Every lease request now fails: the leader cannot renew within its deadline and steps down.
        sandbox.set_faults(r"/leases", error_rate_500=1.0)
        assert stopped.wait(8), "the leader did not step down when renewals failed"
        leader.join(5)
        assert not leader.is_alive()
    finally:
        sandbox.set_faults(r"/leases", error_rate_500=1.0)
        leader.join(8)
        k8s.Configuration.set_default(previous)


# events --------------------------------------------------------------------------------------


def test_events_can_be_created_and_listed_by_involved_object(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    core = k8s.CoreV1Api(api)
    now = datetime.now(UTC)
    core.create_namespaced_event(
        NS,
        k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(generate_name="llm-"),
            involved_object=k8s.V1ObjectReference(kind="Deployment", name=DEPLOY, namespace=NS),
            reason="RLScaleDecision",
            message="scale 1 -> 2: queue per replica 40 > 16",
            type="Normal",
            first_timestamp=now,
            last_timestamp=now,
            source=k8s.V1EventSource(component="rlscale"),
        ),
    )
    mine = core.list_namespaced_event(NS, field_selector="reason=RLScaleDecision").items
    assert len(mine) == 1 and mine[0].metadata.name.startswith("llm-")
    assert mine[0].involved_object.name == DEPLOY
    by_object = core.list_namespaced_event(NS, field_selector=f"involvedObject.name={DEPLOY}").items
    assert {e.reason for e in by_object} >= {"RLScaleDecision", "ScalingReplicaSet"}
    # The client refuses an Event without involvedObject itself; the server does too.
    code, _, body = raw(
        sandbox,
        "POST",
        f"/api/v1/namespaces/{NS}/events",
        {"metadata": {"name": "x"}, "reason": "x"},
    )
    assert code == 422 and json.loads(body)["details"]["causes"][0]["field"] == "involvedObject"


# auth, dry-run, request log ------------------------------------------------------------------


def test_a_wrong_token_is_401_and_no_token_is_anonymous(sandbox: Sandbox) -> None:
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    code, _, body = raw(sandbox, "GET", path, headers={"Authorization": "Bearer wrong"})
    assert code == 401 and json.loads(body)["reason"] == "Unauthorized"
    assert raw(sandbox, "GET", path, headers={"Authorization": f"Bearer {sandbox.token}"})[0] == 200
    assert raw(sandbox, "GET", path)[0] == 200  # kubectl sends no token over http


def test_without_anonymous_access_the_official_client_authenticates_with_the_kubeconfig_token(
    make_sandbox: Callable[..., Sandbox], client_for: Callable[[Sandbox], k8s.ApiClient]
) -> None:
    sb = make_sandbox(allow_anonymous=False)
    assert (
        k8s.AppsV1Api(client_for(sb)).read_namespaced_deployment(DEPLOY, NS).metadata.name == DEPLOY
    )
    code, _, body = raw(sb, "GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}")
    assert code == 401 and json.loads(body)["code"] == 401
    assert raw(sb, "GET", "/version")[0] == 200  # public, as on a real cluster


def test_dry_run_validates_but_stores_nothing(api: k8s.ApiClient, sandbox: Sandbox) -> None:
    apps = k8s.AppsV1Api(api)
    before = apps.read_namespaced_deployment(DEPLOY, NS)
    out = apps.patch_namespaced_deployment_scale(
        DEPLOY, NS, {"spec": {"replicas": 4}}, dry_run="All"
    )
    assert out.spec.replicas == 4
    after = apps.read_namespaced_deployment(DEPLOY, NS)
    assert (
        after.spec.replicas == 1
        and after.metadata.resource_version == before.metadata.resource_version
    )
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment_scale(
            DEPLOY, NS, {"spec": {"replicas": -4}}, dry_run="All"
        )
    assert e.value.status == 422
    apps.create_namespaced_deployment(NS, deployment_body("dry"), dry_run="All")
    with pytest.raises(ApiException):
        apps.read_namespaced_deployment("dry", NS)


def test_request_log_records_every_request_with_method_path_and_content_type(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    sandbox.clear_request_log()
    apps = k8s.AppsV1Api(api)
    apps.read_namespaced_deployment_scale(DEPLOY, NS)
    apps.patch_namespaced_deployment_scale(
        DEPLOY, NS, {"spec": {"replicas": 1}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(ApiException):
        apps.read_namespaced_deployment("missing", NS)
    log = sandbox.request_log
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}/scale", 200),
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}/scale", 200),
        ("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/missing", 404),
    ]
    assert log[1].content_type == "application/merge-patch+json" and log[1].is_write
    assert [r.method for r in sandbox.writes()] == ["PATCH"]
    assert log[0].user_agent.startswith("OpenAPI-Generator")


# fault injection -------------------------------------------------------------------------------


def test_injected_500s_answer_an_internal_error_status_on_matching_paths_only(
    api: k8s.ApiClient, sandbox: Sandbox
) -> None:
    apps = k8s.AppsV1Api(api)
    sandbox.set_faults(r"/scale$", error_rate_500=1.0)
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment_scale(DEPLOY, NS)
    assert e.value.status == 500 and status_body(e.value)["reason"] == "InternalError"
    assert apps.read_namespaced_deployment(DEPLOY, NS).metadata.name == DEPLOY
    sandbox.clear_faults()
    assert apps.read_namespaced_deployment_scale(DEPLOY, NS).spec.replicas == 1


def test_injected_429s_carry_retry_after(sandbox: Sandbox) -> None:
    sandbox.set_faults(r"/deployments", error_rate_429=1.0, retry_after_s=3, methods=("GET",))
    code, headers, body = raw(sandbox, "GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}")
    assert code == 429 and headers["Retry-After"] == "3"
    assert json.loads(body)["details"]["retryAfterSeconds"] == 3
    assert (
        raw(
            sandbox,
            "PATCH",
            f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}",
            {},
            content_type="application/merge-patch+json",
        )[0]
        == 200
    )


def test_injected_error_rates_are_probabilities(sandbox: Sandbox) -> None:
    sandbox.set_faults(r"/deployments/llm$", error_rate_500=0.3)
    codes = [
        raw(sandbox, "GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOY}")[0]
        for _ in range(100)
    ]
    assert 15 <= codes.count(500) <= 45 and codes.count(200) == 100 - codes.count(500)


def test_injected_latency_delays_the_answer(api: k8s.ApiClient, sandbox: Sandbox) -> None:
    sandbox.set_faults(r"/deployments/llm$", latency_s=0.3)
    t0 = time.monotonic()
    k8s.AppsV1Api(api).read_namespaced_deployment(DEPLOY, NS)
    assert time.monotonic() - t0 >= 0.3


def test_dropped_connections_close_without_an_answer(api: k8s.ApiClient, sandbox: Sandbox) -> None:
    import urllib3

    sandbox.set_faults(r"/deployments/llm$", drop_rate=1.0)
    with pytest.raises(urllib3.exceptions.HTTPError):
        k8s.AppsV1Api(api).read_namespaced_deployment(DEPLOY, NS)
    dropped = [r for r in sandbox.request_log if r.path.endswith("/deployments/llm")]
    assert dropped and dropped[-1].status is None
