"""Workloads: request arrivals per interval and request sizes, from real traces or a generator."""

from rlscale.traces.loaders import FORMATS, detect_format, load_workload, save_workload
from rlscale.traces.synthetic import DEFAULT_SYNTHETIC, default_workload, synthetic_workload
from rlscale.traces.transforms import (
    augment,
    compress_time,
    scale_rate,
    scale_to_fleet,
    slice_window,
    superpose,
)
from rlscale.traces.workload import Workload

__all__ = [
    "DEFAULT_SYNTHETIC",
    "FORMATS",
    "Workload",
    "augment",
    "compress_time",
    "default_workload",
    "detect_format",
    "load_workload",
    "save_workload",
    "scale_rate",
    "scale_to_fleet",
    "slice_window",
    "superpose",
    "synthetic_workload",
]
