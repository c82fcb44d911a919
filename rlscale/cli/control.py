"""Subcommands of this area (registered into `rlscale` by rlscale.cli.commands): `control` (the live
controller) and `gpu-exporter` (DCGM-compatible GPU metrics from NVML)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer


def _install_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        stop.set()

    # Only the main thread may install handlers (tests call commands from others).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def control(
    config: Annotated[Path, typer.Option("--config", "-c", help="Controller config (YAML).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide and publish, write nothing (all targets).")
    ] = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig file (default: in-cluster, else ~/.kube/config)."),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one tick and exit.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the config and load every policy, then exit.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Scale Deployments with a trained or rule policy, safely (see the README's controller section)."""
    from rlscale.deploy import jsonlog
    from rlscale.deploy.config import load_config

    cfg = load_config(config)
    updates: dict[str, object] = {}
    if dry_run:
        updates["dry_run"] = True
        updates["targets"] = [t.model_copy(update={"dry_run": True}) for t in cfg.targets]
    if kubeconfig is not None:
        updates["kubernetes"] = cfg.kubernetes.model_copy(update={"kubeconfig": str(kubeconfig)})
    if updates:
        cfg = cfg.model_copy(update=updates)
    jsonlog.setup(log_level)

    from rlscale.deploy.controller import build_controller, make_target

    cache: dict[object, object] = {}
    targets = [
        make_target(cfg, t, cache=cache) for t in cfg.targets
    ]  # refuses bad checkpoints here
    if check:
        for t in targets:
            p = t.policies
            fb = p.fallback.policy.name if p.fallback else "none (hold)"
            lim = p.limits
            typer.echo(
                f"{t.key}: policy {p.primary.policy.name}, fallback {fb}, profile {p.profile.name}, "
                f"replicas {lim.min_replicas}..{lim.max_replicas}, window {p.window}, "
                f"{'dry-run' if t.dry_run else 'live'}"
            )
            for w in p.warnings:
                typer.echo(f"  warning: {w}")
        typer.echo(f"config OK: {len(targets)} target(s), tick {cfg.tick_s:g} s")
        return

    import logging

    from rlscale.deploy.exporter import MetricsServer

    log = logging.getLogger("rlscale.deploy")
    controller = build_controller(cfg, targets=targets)
    server = None
    stop = threading.Event()
    _install_signals(stop)
    try:
        if cfg.exporter.enabled:
            server = MetricsServer(
                controller.metrics.registry, cfg.exporter.address, cfg.exporter.port
            )
        log.info(
            "controller started",
            extra={
                "fields": {
                    "targets": [t.key for t in targets],
                    "tick_s": cfg.tick_s,
                    "dry_run": cfg.dry_run,
                    "metrics_port": server.port if server else None,
                    "leader_election": cfg.leader_election.enabled,
                }
            },
        )
        if once and controller.elector is not None:
            # One tick needs the Lease first; try for up to a lease duration.
            import time

            deadline = time.monotonic() + cfg.leader_election.lease_duration_s + 1
            while (
                not controller.elector.step(time.time())
                and time.monotonic() < deadline
                and not stop.is_set()
            ):
                stop.wait(cfg.leader_election.retry_period_s)
        controller.run(stop, max_ticks=1 if once else None)
    finally:
        log.info("controller stopping", extra={"fields": {"ticks": controller.ticks}})
        controller.close(release=True)
        if server is not None:
            server.stop()


def gpu_exporter(
    port: Annotated[int, typer.Option(help="Port to serve /metrics on.")] = 9400,
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    once: Annotated[
        bool, typer.Option("--once", help="Print one scrape to stdout and exit.")
    ] = False,
) -> None:
    """DCGM-compatible GPU metrics from NVML, for clusters without the DCGM exporter."""
    from prometheus_client import CollectorRegistry, generate_latest

    from rlscale.deploy.gpu_exporter import NvmlCollector, NvmlUnavailable, load_nvml

    try:
        nvml = load_nvml()
    except NvmlUnavailable as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(NvmlCollector(nvml))
        if once:
            typer.echo(generate_latest(registry).decode(), nl=False)
            return
        from rlscale.deploy.exporter import MetricsServer

        server = MetricsServer(registry, address, port)
        typer.echo(f"serving GPU metrics on http://{address}:{server.port}/metrics")
        stop = threading.Event()
        _install_signals(stop)
        try:
            while not stop.wait(3600):
                pass
        finally:
            server.stop()
    finally:
        nvml.nvmlShutdown()


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`. Import heavy modules inside each command."""
    app.command("control")(control)
    app.command("gpu-exporter")(gpu_exporter)
