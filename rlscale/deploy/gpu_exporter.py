"""A small GPU exporter over NVML (`pynvml`, from nvidia-ml-py) for clusters without the DCGM
exporter, with DCGM-compatible names and labels, so the controller's default PromQL works as is:

| series | unit | NVML call |
|---|---|---|
| DCGM_FI_DEV_GPU_UTIL | % | nvmlDeviceGetUtilizationRates().gpu |
| DCGM_FI_DEV_MEM_COPY_UTIL | % | nvmlDeviceGetUtilizationRates().memory |
| DCGM_FI_DEV_FB_USED, DCGM_FI_DEV_FB_FREE | MiB | nvmlDeviceGetMemoryInfo() |
| DCGM_FI_DEV_POWER_USAGE | W | nvmlDeviceGetPowerUsage() / 1000 |
| DCGM_FI_DEV_GPU_TEMP | C | nvmlDeviceGetTemperature(GPU) |
| DCGM_FI_DEV_SM_CLOCK | MHz | nvmlDeviceGetClockInfo(SM) |

Labels as DCGM's: `gpu` (index), `UUID`, `device` (`nvidia<i>`), `modelName`, `Hostname`.
NVML is read at scrape time (no background thread); a metric a GPU does not support is skipped
for that GPU.

Pod attribution: run it as a sidecar in the vLLM pod (it sees that pod's GPUs only) and let
Prometheus's pod discovery add `namespace` and `pod`, which is exactly what the default
`gpu_selector` matches. As a DaemonSet it sees every GPU of the node, and `pod` is the
exporter's own: point `gpu_selector` at `Hostname` then.

Without a GPU (no driver, no libnvidia-ml) NVML raises `NVMLError_LibraryNotFound`;
`rlscale gpu-exporter` then exits with status 2 and says so.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LABELS = ["gpu", "UUID", "device", "modelName", "Hostname"]


class NvmlUnavailable(RuntimeError):
    """NVML could not start; the message says why in the operator's words."""


def load_nvml(nvml: ModuleType | None = None) -> ModuleType:
    """Import and initialise NVML; raises NvmlUnavailable with a clear message."""
    if nvml is None:
        try:
            import pynvml as nvml_mod
        except ImportError:
            raise NvmlUnavailable("pynvml is not installed (pip install nvidia-ml-py)") from None
        nvml = nvml_mod
    try:
        nvml.nvmlInit()
    except nvml.NVMLError_LibraryNotFound:
        raise NvmlUnavailable(
            "no NVIDIA driver on this machine (NVML: NVML Shared Library Not Found): the GPU exporter must run "
            "on a GPU node, in a pod with the NVIDIA container runtime; clusters with the DCGM exporter do not need it"
        ) from None
    except nvml.NVMLError as e:
        raise NvmlUnavailable(f"NVML failed to start: {e}") from None
    return nvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlCollector(Collector):
    def __init__(self, nvml: ModuleType, hostname: str | None = None) -> None:
        self.nvml = nvml
        self.hostname = hostname or socket.gethostname()

    def _read(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, fn)(*args)
        except self.nvml.NVMLError:
            return None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nv = self.nvml
        fams = {
            "util": GaugeMetricFamily(
                "DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=LABELS
            ),
            "copy": GaugeMetricFamily(
                "DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", labels=LABELS
            ),
            "used": GaugeMetricFamily(
                "DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels=LABELS
            ),
            "free": GaugeMetricFamily(
                "DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=LABELS
            ),
            "power": GaugeMetricFamily(
                "DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", labels=LABELS
            ),
            "temp": GaugeMetricFamily(
                "DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", labels=LABELS
            ),
            "clock": GaugeMetricFamily(
                "DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", labels=LABELS
            ),
        }
        count = self._read("nvmlDeviceGetCount") or 0
        for i in range(int(count)):
            h = self._read("nvmlDeviceGetHandleByIndex", i)
            if h is None:
                continue
            labels = [
                str(i),
                _text(self._read("nvmlDeviceGetUUID", h) or ""),
                f"nvidia{i}",
                _text(self._read("nvmlDeviceGetName", h) or ""),
                self.hostname,
            ]
            util = self._read("nvmlDeviceGetUtilizationRates", h)
            if util is not None:
                fams["util"].add_metric(labels, float(util.gpu))
                fams["copy"].add_metric(labels, float(util.memory))
            mem = self._read("nvmlDeviceGetMemoryInfo", h)
            if mem is not None:
                fams["used"].add_metric(labels, mem.used / 2**20)
                fams["free"].add_metric(labels, mem.free / 2**20)
            power = self._read("nvmlDeviceGetPowerUsage", h)
            if power is not None:
                fams["power"].add_metric(labels, power / 1000.0)
            temp = self._read("nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU)
            if temp is not None:
                fams["temp"].add_metric(labels, float(temp))
            clock = self._read("nvmlDeviceGetClockInfo", h, nv.NVML_CLOCK_SM)
            if clock is not None:
                fams["clock"].add_metric(labels, float(clock))
        yield from fams.values()
