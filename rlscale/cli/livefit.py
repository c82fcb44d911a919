"""`rlscale profiles fit --prometheus`: the command's side of rlscale.deploy.livefit (time
arguments, the output path, the printed fit). Registered by `rlscale.cli.profiles`."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def fit_from_prometheus(
    url: str,
    selector: str,
    start: str,
    end: str,
    step_s: float,
    profile: str,
    out: Path | None,
    time_scale: float = 1.0,
) -> Path:
    """Fit `profile`'s latency model from the service's vLLM series and write the YAML to `out`
    (a .yaml path, or a folder for `<name>.yaml`); returns the path written."""
    import yaml

    from rlscale.deploy.export import PrometheusRaw, parse_time
    from rlscale.deploy.livefit import LiveFitRequest, fit_profile
    from rlscale.errors import InputError
    from rlscale.profiles.model import load_profile

    if out is None:
        raise InputError(
            "--out", "with --prometheus, give the profile YAML to write (--out my.yaml)"
        )
    if not selector.strip():
        raise InputError("--selector", "with --prometheus, give the pods' label matchers")
    base = load_profile(profile)
    now = time.time()
    req = LiveFitRequest(
        selector=selector,
        start_s=parse_time(start, "--start", now),
        end_s=parse_time(end, "--end", now),
        step_s=step_s,
        time_scale=time_scale,
        source=url,
    )
    reader = PrometheusRaw(url)
    try:
        fitted, fit = fit_profile(reader, req, base)
    finally:
        reader.close()
    path = out if out.suffix in (".yaml", ".yml") else out / f"{fitted.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            fitted.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100
        )
    )
    lat = fitted.latency
    typer.echo(
        f"  TPOT = {lat.tpot_base_ms:.3f} ms + ({lat.tpot_ms_per_seq:.4f} + "
        f"{lat.tpot_ms_per_seq_per_ktok:.4f} x ctx/1k + {lat.tpot_ms_per_prefill_token:.4f} x "
        f"isl/osl) ms x running"
    )
    typer.echo(
        f"  prefill {fit.tpot.prefill_tokens_per_s:,.0f} tokens/s per replica, overhead "
        f"{lat.prefill_base_ms:.1f} ms; KV cache {lat.kv_cache_tokens:,} tokens"
        + (" (kept from the base profile)" if fit.kv is None else "")
    )
    if fit.tpot.kept:
        typer.echo(f"  kept from {base.name} (not identifiable here): {', '.join(fit.tpot.kept)}")
    typer.echo(f"wrote {path}: {fit.error_text()}")
    return path
