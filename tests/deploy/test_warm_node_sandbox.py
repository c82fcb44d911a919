"""The warm-node tier live, end to end on the sandbox's node pool: the controller holds one GPU
node with a placeholder pause pod (through the placeholder Deployment's `/scale`), a load step
scales the model up, the new replica preempts the placeholder and starts on the held node
without waiting for a node, and the placeholder's ReplicaSet recreates it, which the emulated
cluster-autoscaler gives a new node: the cluster-autoscaler over-provisioning pattern, with
nothing written but two `/scale` subresources.

One GPU per node, so each replica and each placeholder needs a node of its own; time_scale 60:
a node's 80-120 s boot takes 1.3-2 s of wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlscale.deploy.controller import build_controller
from rlscale.sandbox.apiserver.resources import DEPLOYMENTS
from tests.deploy.test_controller_sandbox import HPA, Running, set_load, spec_replicas
from tests.deploy.test_standby_sandbox import (
    DEP,
    NS,
    PH,
    TIME_SCALE,
    assert_least_privilege,
    config,
    events,
    is_ready,
    pytestmark,  # noqa: F401 - the same marks: real Prometheus, slow
)


@pytest.fixture(scope="module")
def sb() -> Iterator[Any]:
    from rlscale.sandbox.nodes import NodePool
    from rlscale.sandbox.replay import constant_workload
    from rlscale.sandbox.runner import Sandbox

    sandbox = Sandbox(
        "llama-3.1-8b-h100",
        constant_workload(10.0),
        time_scale=TIME_SCALE,
        replicas=1,
        scrape_interval_s=0.5,
        seed=11,
        nodes=NodePool(gpus_per_node=1, initial_nodes=1, max_nodes=8),
    )
    sandbox.start()
    try:
        sandbox.wait_for_ready(1, 20)
        sandbox.create_placeholder(0, name=PH)
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def hpa_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("hpa") / "hpa.yaml"
    p.write_text(yaml.safe_dump(HPA))
    return p


def model_pods(sb: Any) -> list[dict[str, Any]]:
    return [
        p
        for p in sb.all_pods()
        if (p["metadata"].get("labels") or {}).get("app") == DEP
        and not p["metadata"].get("deletionTimestamp")
    ]


def held_pods(sb: Any) -> list[dict[str, Any]]:
    """Placeholder pods bound to a node and Ready: the nodes the pool holds."""
    return [
        p
        for p in sb.placeholder_pods(PH)
        if not p["metadata"].get("deletionTimestamp") and is_ready(p) and p["spec"].get("nodeName")
    ]


def test_a_scale_up_takes_the_node_the_placeholder_held_and_the_pool_is_rebuilt(
    sb: Any, hpa_manifest: Path
) -> None:
    cfg = config(
        sb, hpa_manifest, {"tier": "warm_node", "placeholder": PH}, f"hpa:{hpa_manifest}#warm=1"
    )
    sb.clear_request_log()
    controller = build_controller(cfg, identity="warm-node-pool")
    with Running(controller) as run:
        # the pool: the placeholder scaled to 1 through /scale; the autoscaler adds its node
        run.wait(lambda: len(held_pods(sb)) == 1, 20, "the placeholder Running on a node")
        (holder,) = held_pods(sb)
        warm_node = holder["spec"]["nodeName"]
        assert warm_node not in {p["spec"].get("nodeName") for p in model_pods(sb)}
        before = {p["metadata"]["name"] for p in model_pods(sb)}

        # the load step: the new replica preempts the placeholder and binds to its node
        set_load(sb, 60.0)
        run.wait(lambda: spec_replicas(sb) > 1, 15, "the scale-up")

        def on_warm_node() -> list[dict[str, Any]]:
            return [
                p
                for p in model_pods(sb)
                if p["metadata"]["name"] not in before and p["spec"].get("nodeName") == warm_node
            ]

        run.wait(lambda: bool(on_warm_node()), 10, "a new replica bound to the held node")
        run.wait(lambda: any(is_ready(p) for p in on_warm_node()), 30, "it is Ready")
        # the placeholder is back, on a node of its own that the autoscaler added
        run.wait(
            lambda: any(p["spec"]["nodeName"] != warm_node for p in held_pods(sb)),
            30,
            "the placeholder recreated on a new node",
        )
        placeholder_spec = int(sb.call(lambda s: s.get(DEPLOYMENTS, NS, PH))["spec"]["replicas"])

    assert not run.errors
    assert placeholder_spec == 1
    assert events(sb, "Preempted"), "the placeholder pod was preempted by the model pod"
    ev = events(sb, "ScalePlaceholder")
    assert ev and all(e["type"] == "Normal" for e in ev)
    for r in run.results:
        if r.record.desired is not None:
            assert 1 <= r.record.desired <= 6
    assert_least_privilege(sb, "warm-node-pool")
