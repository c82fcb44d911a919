"""A local emulated cluster: a stand-in Kubernetes API, emulated LLM server pods, real Prometheus.

    apiserver/   the stand-in API server (store, handlers, discovery, patch, selectors, tables,
                 faults, Status errors)
    kubelet.py   simulated deployment controller and kubelet (cold starts, termination, the
                 Ready condition of vLLM sleep mode)
    pods.py      per-pod servers: /metrics with vLLM and DCGM series, vLLM's sleep endpoints
    nodes.py     opt-in GPU node pool: scheduler fit and preemption, cluster-autoscaler,
                 node-local image/weight cache, placeholder (pause) pods
    replay.py    a workload replayed through the serving model against the Ready pods
    prometheus.py  the Prometheus child process, its config and file_sd targets
    runner.py    `Sandbox`: all of it in one process, for tests and `rlscale sandbox`

`Sandbox` is importable from here; the import is lazy so `rlscale --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlscale.sandbox.runner import Sandbox

__all__ = ["Sandbox"]


def __getattr__(name: str) -> Any:
    if name == "Sandbox":
        from rlscale.sandbox.runner import Sandbox

        return Sandbox
    raise AttributeError(name)
