"""`rlscale profiles fit`: refit the shipped service profiles from the calibration data and write
(or, with --check, compare) `<name>.yaml` and `FITS.md`. The fit itself is rlscale.profiles.fit.

`rlscale profiles fit --vllm-bench FILE [FILE...] --out my.yaml`: a profile for the user's own
service from `vllm bench serve --save-result` files, its iteration-time coefficients fitted by
simulating each run in the request-level engine (rlscale.serving.benchfit).

`rlscale profiles cold-start`: a profile whose `cold_start` stages are fitted from a service's
pods in the Kubernetes API (or a `kubectl get pods -o json` file); rlscale.profiles.coldstart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlscale.cli import options as opts


def register(app: typer.Typer) -> None:
    """Add the `profiles` commands to `app`. pandas and scipy load inside the command."""
    profiles = typer.Typer(
        name="profiles", help="Fit the shipped service profiles.", no_args_is_help=True
    )

    @profiles.command("fit")
    def fit(
        data: Annotated[
            Path | None,
            typer.Option(
                "--data", help="Calibration data (default ../shared/data, or $RLSCALE_SHARED_DATA)."
            ),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out", help="Where the YAML and FITS.md go (default: the shipped profiles)."
            ),
        ] = None,
        check: Annotated[
            bool, typer.Option("--check", help="Write nothing; exit 1 if the files differ.")
        ] = False,
        vllm_bench: Annotated[
            bool,
            typer.Option(
                "--vllm-bench",
                help="Fit a profile from the vllm bench serve result JSON FILES instead; "
                "--out is then the profile YAML to write.",
            ),
        ] = False,
        bench_files: Annotated[
            list[Path] | None,
            typer.Argument(metavar="FILES", help="With --vllm-bench: result JSON files."),
        ] = None,
        profile: Annotated[
            str,
            typer.Option(
                "--profile",
                help="With --vllm-bench: the profile whose KV cache, max batch, cold start and "
                "price the new one keeps (a result file does not say), and the fit's start.",
            ),
        ] = opts.DEFAULT_PROFILE,
        name: Annotated[
            str | None, typer.Option("--name", help="With --vllm-bench: the new profile's name.")
        ] = None,
        range_ratio: Annotated[
            float,
            typer.Option(
                "--range-ratio",
                help="With --vllm-bench: the runs' --random-range-ratio (lengths within "
                "+-ratio of the means; a result file does not record it).",
            ),
        ] = 0.0,
        prometheus: Annotated[
            str | None,
            typer.Option(
                "--prometheus",
                help="Fit --profile's latency model from a live service's vLLM series in this "
                "Prometheus instead (with --selector, --start, --end; --out is the YAML file).",
            ),
        ] = None,
        selector: Annotated[
            str, typer.Option("--selector", help="With --prometheus: the pods' label matchers.")
        ] = "",
        start: Annotated[str, typer.Option("--start", help="With --prometheus.")] = "now-1h",
        end: Annotated[str, typer.Option("--end", help="With --prometheus.")] = "now",
        step_s: Annotated[float, typer.Option("--step-s", help="With --prometheus.")] = 60.0,
        time_scale: Annotated[float, typer.Option("--time-scale", hidden=True)] = 1.0,
    ) -> None:
        """Fit every profile in rlscale.profiles.fit.SPECS; write <name>.yaml and FITS.md.
        With --vllm-bench: fit one profile from benchmark result files. With --prometheus: fit
        --profile's latency model from a live service (rlscale.deploy.livefit)."""
        if prometheus is not None:
            from rlscale.cli.livefit import fit_from_prometheus

            fit_from_prometheus(prometheus, selector, start, end, step_s, profile, out, time_scale)
            return
        if vllm_bench:
            _fit_vllm_bench(bench_files or [], out, profile, name, range_ratio)
            return
        if bench_files:
            raise typer.BadParameter("result files need --vllm-bench", param_hint="FILES")
        from rlscale.profiles.fit import default_data_dir, render_all, stale_files, write_files
        from rlscale.profiles.model import PROFILE_DIR

        data_dir = data if data is not None else default_data_dir()
        out_dir = out if out is not None else PROFILE_DIR
        files = render_all(data_dir)
        if check:
            stale = stale_files(files, out_dir)
            for n in stale:
                typer.echo(
                    f"{out_dir / n}: differs from what {data_dir} gives; re-run the fit", err=True
                )
            raise typer.Exit(1 if stale else 0)
        for path in write_files(files, out_dir):
            typer.echo(f"wrote {path}")

    @profiles.command("cold-start")
    def cold_start(
        out: Annotated[Path, typer.Option("--out", "-o", help="Where the profile YAML goes.")],
        profile: opts.Profile = opts.DEFAULT_PROFILE,
        namespace: Annotated[
            str, typer.Option("--namespace", "-n", help="Namespace of the service's pods.")
        ] = "default",
        selector: Annotated[
            str, typer.Option("--selector", "-l", help="Label selector of its pods (app=llm).")
        ] = "",
        kubeconfig: Annotated[
            Path | None, typer.Option("--kubeconfig", help="Kubeconfig (default: $KUBECONFIG).")
        ] = None,
        context: Annotated[
            str | None, typer.Option("--context", help="Kubeconfig context.")
        ] = None,
        pods_json: Annotated[
            Path | None,
            typer.Option(
                "--pods-json", help="Read `kubectl get pods -o json` from here, not the API."
            ),
        ] = None,
        nodes_json: Annotated[
            Path | None,
            typer.Option("--nodes-json", help="With --pods-json: `kubectl get nodes -o json`."),
        ] = None,
        name: Annotated[
            str | None, typer.Option("--name", help="Name of the new profile (default: kept).")
        ] = None,
    ) -> None:
        """Fit the cold-start stages (node provisioning, scheduling, container start, engine
        ready) from the pods' conditions and write `--profile` with them as a new YAML."""
        import yaml

        from rlscale.errors import InputError
        from rlscale.profiles.coldstart import fit_cold_start, with_cold_start
        from rlscale.profiles.model import load_profile

        base = load_profile(profile)
        if pods_json is not None:
            pods, nodes = _pods_from_files(pods_json, nodes_json)
            source = str(pods_json)
        else:
            pods, nodes = _pods_from_api(kubeconfig, context, namespace, selector)
            source = f"the Kubernetes API, namespace {namespace}" + (
                f", selector {selector}" if selector else ""
            )
        try:
            fit = fit_cold_start(pods, nodes)
        except ValueError as e:
            raise InputError(source, str(e)) from None
        fitted = with_cold_start(base, fit, source)
        if name:
            fitted = fitted.model_copy(update={"name": name})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            yaml.safe_dump(
                fitted.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100
            )
        )
        for stage in fitted.cold_start:
            typer.echo(
                f"  {stage.name:18s} low {stage.low_s:7.1f} s  mode {stage.mode_s:7.1f} s  "
                f"high {stage.high_s:7.1f} s  p {stage.probability:.2f}"
            )
        typer.echo(f"wrote {out}: {fit.error_text()}")

    app.add_typer(profiles, name="profiles")


def _fit_vllm_bench(
    files: list[Path], out: Path | None, base_name: str, name: str | None, range_ratio: float
) -> None:
    import yaml

    from rlscale.errors import InputError
    from rlscale.profiles.model import load_profile
    from rlscale.serving.benchfit import fit_iteration_model
    from rlscale.serving.vllm_bench import fitted_profile, read_vllm_bench

    if not files:
        raise InputError("--vllm-bench", "expected one or more result JSON files")
    if out is None:
        raise InputError("--out", "expected the path of the profile YAML to write")
    if not 0.0 <= range_ratio < 1.0:
        raise InputError("--range-ratio", f"expected a number in [0, 1), got {range_ratio}")
    runs = [read_vllm_bench(f, range_ratio=range_ratio, seed=i) for i, f in enumerate(files)]
    base = load_profile(base_name)
    for r in runs:
        kv = r.spec.prompt_tokens + r.spec.output_tokens
        if kv > base.latency.kv_cache_tokens:
            raise InputError(
                r.path,
                f"{kv} tokens per request exceed {base.name}'s KV cache "
                f"({base.latency.kv_cache_tokens}); pass a --profile that holds them",
                field="total_input_tokens",
            )
        typer.echo(f"  {Path(r.path).name}: {r.describe()}")
    fit = fit_iteration_model(base.latency, [r.point() for r in runs])
    try:
        fitted = fitted_profile(base, runs, fit, name)
    except ValueError as e:  # pydantic: a coefficient out of its range
        raise InputError(str(out), f"the fitted profile is not valid: {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        yaml.safe_dump(
            fitted.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100
        )
    )
    coef = ", ".join(f"{k} = {v:.4g}" for k, v in fit.coef.items())
    typer.echo(f"  {coef}")
    typer.echo(f"wrote {out}: {fitted.sources['fit_error']}")


def _pods_from_files(pods_json: Path, nodes_json: Path | None) -> tuple[list[Any], dict[str, Any]]:
    import json

    from rlscale.errors import InputError
    from rlscale.profiles.coldstart import pods_of

    def read(p: Path) -> Any:
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise InputError(str(p), "file not found") from None
        except ValueError as e:
            raise InputError(str(p), f"not JSON: {e}") from None

    pods = pods_of(read(pods_json))
    if not pods:
        raise InputError(str(pods_json), "expected `kubectl get pods -o json` (a List of Pods)")
    nodes = {}
    if nodes_json is not None:
        for n in pods_of(read(nodes_json)) or []:
            nodes[str((n.get("metadata") or {}).get("name"))] = n
    return pods, nodes


def _pods_from_api(
    kubeconfig: Path | None, context: str | None, namespace: str, selector: str
) -> tuple[list[Any], dict[str, Any]]:
    """The pods (raw JSON) and, where readable, their nodes (a 403/404 on nodes leaves the node
    stage out: reading nodes needs a ClusterRole)."""
    import json

    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from rlscale.errors import InputError

    conf = client.Configuration()
    try:
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None,
            context=context,
            client_configuration=conf,
        )
    except (config.ConfigException, FileNotFoundError) as e:
        raise InputError(str(kubeconfig or "kubeconfig"), f"cannot load: {e}") from None
    conf.retries = False
    with client.ApiClient(conf) as api:
        core = client.CoreV1Api(api)
        try:
            r: Any = core.list_namespaced_pod(
                namespace, label_selector=selector or None, _preload_content=False
            )
        except ApiException as e:
            raise InputError(
                f"pods in {namespace}", f"the API answered {e.status}: {e.reason}"
            ) from None
        except Exception as e:  # noqa: BLE001 - urllib3 connection errors, one line each
            raise InputError(
                conf.host, f"Kubernetes API unreachable: {e.__class__.__name__}"
            ) from None
        pods = json.loads(r.data).get("items") or []
        nodes: dict[str, Any] = {}
        for node_name in {str((p.get("spec") or {}).get("nodeName") or "") for p in pods} - {""}:
            try:
                n: Any = core.read_node(node_name, _preload_content=False)
            except ApiException:
                continue  # no permission or no such node: the node stage is left out
            except Exception:  # noqa: BLE001 - e.g. a stand-in API without nodes
                continue
            nodes[node_name] = json.loads(n.data)
    return pods, nodes
