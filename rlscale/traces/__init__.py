"""Workloads: request arrivals per interval and request sizes, from real traces or a generator."""

from rlscale.traces.workload import Workload

__all__ = ["Workload"]
