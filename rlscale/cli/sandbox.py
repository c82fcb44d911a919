"""Subcommands of this area (registered into `rlscale` by rlscale.cli.commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rlscale.cli import options as opts


def _workload(trace: str, seed: int, rate_rps: float | None, profile: object) -> object:
    from rlscale.sandbox.replay import constant_workload

    if trace == "synthetic":
        if rate_rps is None:
            try:
                from rlscale.traces.synthetic import default_workload  # type: ignore[import-not-found]

                return default_workload(seed)
            except (ImportError, AttributeError):
                rate_rps = 2.0
        return constant_workload(
            rate_rps,
            prompt_tokens=profile.typical_prompt_tokens,  # type: ignore[attr-defined]
            output_tokens=profile.typical_output_tokens,  # type: ignore[attr-defined]
        )
    return opts.load_trace(trace, seed=seed)


def register(app: typer.Typer) -> None:
    """Add this area's commands to `app`. Import heavy modules inside each command."""

    @app.command("sandbox")
    def sandbox(
        profile: opts.Profile = opts.DEFAULT_PROFILE,
        trace: opts.Trace = opts.SYNTHETIC,
        time_scale: Annotated[
            float, typer.Option(min=0.001, help="Simulated seconds per wall-clock second.")
        ] = 1.0,
        replicas: Annotated[
            int | None,
            typer.Option(
                min=0,
                help="Initial replicas of the Deployment (default: enough to serve the "
                "workload's first 10 minutes at 70% of their SLO capacity).",
            ),
        ] = None,
        kubeconfig_out: Annotated[
            Path | None, typer.Option(help="Also write the kubeconfig here.")
        ] = None,
        namespace: Annotated[
            str, typer.Option(help="Namespace of the emulated Deployment.")
        ] = "default",
        deployment: Annotated[str, typer.Option(help="Name of the emulated Deployment.")] = "llm",
        rate: Annotated[
            float | None, typer.Option(help="With --trace synthetic: a constant rate in req/s.")
        ] = None,
        seed: Annotated[
            int, typer.Option(help="Seed of cold starts, names and synthetic workloads.")
        ] = 0,
        prometheus: Annotated[
            bool, typer.Option("--prometheus/--no-prometheus", help="Start a real Prometheus.")
        ] = True,
        duration_s: Annotated[
            float | None, typer.Option(help="Stop after this many wall-clock seconds.")
        ] = None,
        fault: Annotated[
            list[str] | None,
            typer.Option(
                help="A fault rule on the stand-in API, PATH_REGEX[@METHODS]:KEY=VALUE,... "
                "(keys: error_rate_500, error_rate_429, error_rate_409, drop_rate, lose_rate, "
                "latency_s, retry_after_s), e.g. '/scale$@PATCH:lose_rate=0.5'; repeatable. "
                "At run time: POST/DELETE <API server>/rlscale-sandbox/v1/faults.",
            ),
        ] = None,
        write_controller_config: Annotated[
            Path | None,
            typer.Option(
                help="Write a ready `rlscale control` config for this sandbox here: its "
                "Prometheus and kubeconfig, rate queries divided by --time-scale and the "
                "controller's clock settings and the policy's limits scaled to match.",
            ),
        ] = None,
    ) -> None:
        """Run a local emulated cluster: a Kubernetes API stand-in, vLLM-like pods that cold-start
        and serve a replayed workload, and Prometheus scraping them. Ctrl-C stops everything."""
        import signal
        import threading
        import time

        from rlscale.errors import InputError
        from rlscale.profiles.model import load_profile
        from rlscale.sandbox.apiserver.faults import FaultRule
        from rlscale.sandbox.replay import replicas_for
        from rlscale.sandbox.runner import Sandbox

        rules = []
        for text in fault or ():
            try:
                rules.append(FaultRule.parse(text))
            except (ValueError, TypeError) as e:
                raise InputError("--fault", str(e), field="fault") from None
        prof = load_profile(profile)
        workload = _workload(trace, seed, rate, prof)
        if replicas is None:
            replicas = replicas_for(workload, prof)  # type: ignore[arg-type]
        sb = Sandbox(
            prof,
            workload,  # type: ignore[arg-type]
            namespace=namespace,
            deployment=deployment,
            replicas=replicas,
            time_scale=time_scale,
            seed=seed,
            prometheus=prometheus,
            kubeconfig_out=kubeconfig_out,
        )
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        for rule in rules:
            sb.faults.add(rule)
        try:
            sb.start()
            kubeconfig = kubeconfig_out or sb.kubeconfig_path
            w = sb.workload
            typer.echo(
                f"rlscale sandbox: deployment {namespace}/{deployment} ({prof.name}), "
                f"workload {w.name} ({w.n_bins} bins of {w.interval_s:g} s), time x{time_scale:g}"
            )
            typer.echo(f"  kubeconfig:  {kubeconfig}")
            typer.echo(f"  replicas:    {replicas} at start")
            typer.echo(f"  API server:  {sb.api_url}")
            typer.echo(
                f"  faults:      {sb.api_url}/rlscale-sandbox/v1/faults ({len(rules)} rules)"
            )
            if sb.prometheus_url:
                typer.echo(f"  Prometheus:  {sb.prometheus_url} (pid {sb.prometheus_pid})")
            if write_controller_config is not None:
                if not sb.prometheus_url:
                    raise InputError(
                        "--write-controller-config",
                        "the controller reads Prometheus; drop --no-prometheus",
                        field="write_controller_config",
                    )
                from rlscale.deploy.sandbox_config import (
                    sandbox_controller_config,
                    write_sandbox_controller_config,
                )

                as_file = Path(profile).is_file()  # a YAML path, else a shipped name
                cfg = sandbox_controller_config(
                    prometheus_url=sb.prometheus_url,
                    kubeconfig=Path(str(kubeconfig)).resolve(),
                    namespace=namespace,
                    deployment=deployment,
                    profile=str(Path(profile).resolve()) if as_file else profile,
                    time_scale=time_scale,
                    scrape_interval_s=sb.scrape_interval_s,
                )
                out = write_sandbox_controller_config(write_controller_config, cfg, time_scale)
                typer.echo(f"  controller:  rlscale control --config {out}")
            typer.echo(f"  try:         kubectl --kubeconfig {kubeconfig} get pods -w")
            typer.echo("Ctrl-C stops everything.", err=False)
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not stop.wait(0.2):
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            sb.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        typer.echo("sandbox stopped")
