"""The NVML GPU exporter, with a fake NVML (and the real one where there is no GPU)."""

from __future__ import annotations

import types

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from rlscale.deploy.gpu_exporter import NvmlCollector, NvmlUnavailable, load_nvml


class _Error(Exception):
    pass


def fake_nvml(*, missing_library: bool = False, gpus: int = 2) -> types.ModuleType:
    nv = types.ModuleType("pynvml")
    nv.NVMLError = _Error
    nv.NVMLError_LibraryNotFound = type("NVMLError_LibraryNotFound", (_Error,), {})
    nv.NVML_TEMPERATURE_GPU = 0
    nv.NVML_CLOCK_SM = 1
    nv.shutdowns = 0

    def init() -> None:
        if missing_library:
            raise nv.NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    def shutdown() -> None:
        nv.shutdowns += 1

    def power(h: int) -> int:
        if h == 1:
            raise _Error("Not Supported")
        return 350_000

    nv.nvmlInit = init
    nv.nvmlShutdown = shutdown
    nv.nvmlDeviceGetCount = lambda: gpus
    nv.nvmlDeviceGetHandleByIndex = lambda i: i
    nv.nvmlDeviceGetUUID = lambda h: f"GPU-{h:04d}"
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87 + h, memory=40)
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=60 * 2**30, free=20 * 2**30)
    nv.nvmlDeviceGetPowerUsage = power
    nv.nvmlDeviceGetTemperature = lambda h, kind: 61
    nv.nvmlDeviceGetClockInfo = lambda h, kind: 1980
    return nv


def test_exports_dcgm_names_and_labels() -> None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NvmlCollector(load_nvml(fake_nvml()), hostname="node-1"))
    labels = {
        "gpu": "0",
        "UUID": "GPU-0000",
        "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": "node-1",
    }
    assert reg.get_sample_value("DCGM_FI_DEV_GPU_UTIL", labels) == 87
    assert (
        reg.get_sample_value(
            "DCGM_FI_DEV_GPU_UTIL", {**labels, "gpu": "1", "UUID": "GPU-0001", "device": "nvidia1"}
        )
        == 88
    )
    assert reg.get_sample_value("DCGM_FI_DEV_FB_USED", labels) == 60 * 1024
    assert reg.get_sample_value("DCGM_FI_DEV_POWER_USAGE", labels) == 350
    text = generate_latest(reg).decode()
    assert "DCGM_FI_DEV_POWER_USAGE{" in text and 'gpu="1"' in text
    assert (
        text.count("DCGM_FI_DEV_POWER_USAGE{") == 1
    )  # GPU 1 does not support it: skipped, not zero


def test_without_a_gpu_it_says_so() -> None:
    with pytest.raises(NvmlUnavailable, match="no NVIDIA driver on this machine"):
        load_nvml(fake_nvml(missing_library=True))


def test_the_command_exits_with_status_2_and_a_clear_message_without_a_gpu(monkeypatch) -> None:
    import typer

    from rlscale.cli import control as cli

    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_nvml(missing_library=True))
    app = typer.Typer()
    cli.register(app)
    result = CliRunner().invoke(app, ["gpu-exporter", "--once"])
    assert result.exit_code == 2
    assert "no NVIDIA driver" in result.output


def test_the_command_prints_one_scrape(monkeypatch) -> None:
    import typer

    from rlscale.cli import control as cli

    nv = fake_nvml(gpus=1)
    monkeypatch.setitem(__import__("sys").modules, "pynvml", nv)
    app = typer.Typer()
    cli.register(app)
    result = CliRunner().invoke(app, ["gpu-exporter", "--once"])
    assert result.exit_code == 0, result.output
    assert "DCGM_FI_DEV_GPU_UTIL{" in result.output and nv.shutdowns == 1
