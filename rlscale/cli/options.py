"""One CLI vocabulary: the option types every command uses for the same concept, so `--trace`,
`--profile`, `--seeds`, `--peak-replicas`, the replica bounds and the SLO options are spelled,
typed, defaulted and explained the same way in `simulate`, `evaluate`, `traces` and `sandbox`.

Each alias is an `Annotated` type for a typer parameter; the default stays on the parameter
(typer's rule), taken from the constants here or from `rlscale.contract` for the SLO:

    def simulate(trace: opts.Trace = opts.SYNTHETIC, seeds: opts.Seeds = 1,
                 ttft_slo_s: opts.TtftSlo = opts.DEFAULT_TTFT_SLO) -> None: ...

Only typer is imported at module level: `rlscale --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from rlscale.contract import DEFAULT_TTFT_SLO_S
from rlscale.errors import InputError

if TYPE_CHECKING:
    from rlscale.serving.model import SimConfig
    from rlscale.serving.shield import ShieldConfig
    from rlscale.traces.workload import Workload

SYNTHETIC = "synthetic"
DEFAULT_PROFILE = "llama-3.1-8b-h100"
# the evaluator's bounds, for policies without their own (a manifest or checkpoint brings its own)
DEFAULT_MIN_REPLICAS = 2
DEFAULT_MAX_REPLICAS = 20
DEFAULT_PEAK_REPLICAS = 12.0

TRACE_HELP = (
    "Workload: a trace file in any supported format, PATH@START:END to cut days START..END of it, "
    "or synthetic / synthetic:SEED (the built-in day)."
)
FORMAT_HELP = "Trace format: azure, servegen, jsonl, requests, rate or workload (default: detect)."
PROFILE_HELP = "Service profile: a shipped profile name or a profile YAML path."
SEEDS_HELP = "Run seeds 0..N-1."
PEAK_REPLICAS_HELP = "Rescale each workload so its p99 minute needs this many replicas."
REPLICA_BOUNDS_HELP = "Bounds for policies without their own."

Trace = Annotated[str, typer.Option("--trace", "-t", help=TRACE_HELP)]
TraceArgument = Annotated[str, typer.Argument(help=TRACE_HELP, metavar="TRACE")]
Traces = Annotated[
    list[str] | None,
    typer.Option("--trace", "-t", help=f"{TRACE_HELP} Repeat for several; default {SYNTHETIC}."),
]
TraceFormat = Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP)]
Profile = Annotated[str, typer.Option("--profile", help=PROFILE_HELP)]
Profiles = Annotated[
    list[str] | None,
    typer.Option(
        "--profile", help=f"{PROFILE_HELP} Repeat for several; default {DEFAULT_PROFILE}."
    ),
]
Seeds = Annotated[int, typer.Option("--seeds", min=1, help=SEEDS_HELP)]
PeakReplicas = Annotated[float, typer.Option("--peak-replicas", min=0.1, help=PEAK_REPLICAS_HELP)]
Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Serving model: fluid (fast, what training uses) or requests (the request-level "
        "reference engine; Azure traces are replayed request by request).",
    ),
]
MinReplicas = Annotated[int, typer.Option("--min-replicas", min=0, help=REPLICA_BOUNDS_HELP)]
MaxReplicas = Annotated[int, typer.Option("--max-replicas", min=1, help=REPLICA_BOUNDS_HELP)]
# the SLO class (`rlscale.slo`): a number or BASE+SLOPE/1k, parsed by `sim_config`
TtftSlo = Annotated[
    str,
    typer.Option(
        "--ttft-slo-s",
        "--ttft-slo",
        help="TTFT SLO: seconds (2, 2s, 1500ms) or a base plus a slope per 1,000 prompt tokens "
        "(2s+0.5s/1k: a 12k-token prompt gets 8 s).",
    ),
]
DEFAULT_TTFT_SLO = f"{DEFAULT_TTFT_SLO_S:g}"  # the contract's flat default, spelled for the option
TpotSlo = Annotated[float, typer.Option("--tpot-slo-s", min=0.0, help="TPOT SLO (s).")]
SloTarget = Annotated[
    float,
    typer.Option("--slo-target", min=0.0, max=1.0, help="SLO attainment the oracle plans for."),
]


Shield = Annotated[
    list[str] | None,
    typer.Option(
        "--shield",
        metavar="KEY=VALUE",
        help=(
            "A run-time shield setting for the learned policies (a `ShieldConfig` field, as in a "
            "controller target's `shield:` section), e.g. consolidation_utilisation=0.8. Repeat "
            "for several; default: the shipped shield."
        ),
    ),
]


def shield_config(settings: list[str] | None) -> ShieldConfig:
    """`--shield KEY=VALUE ...` as a `ShieldConfig` (values read as YAML scalars, so
    `lookback_s=null` is None); a bad key or value is one line naming the option and the field."""
    import yaml

    from rlscale.config import validate_model
    from rlscale.serving.shield import ShieldConfig

    values: dict[str, Any] = {}
    for item in settings or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError("--shield", f"expected KEY=VALUE, got {item!r}")
        values[key.strip()] = yaml.safe_load(value)
    return validate_model(values, ShieldConfig, "--shield")


def sim_config(ttft_slo: str | float, tpot_slo_s: float, **kw: float) -> SimConfig:
    """The simulator config held to the SLO class `--ttft-slo-s` / `--tpot-slo-s` give (a bad
    spec is one line naming the option)."""
    from rlscale.serving.model import SimConfig
    from rlscale.slo import parse_slo

    return SimConfig.with_slo(parse_slo(ttft_slo, tpot_slo_s), **kw)


def seed_list(seeds: int) -> list[int]:
    """`--seeds N` as the seeds it means: 0..N-1."""
    return list(range(seeds))


def check_replica_bounds(min_replicas: int, max_replicas: int) -> None:
    if min_replicas > max_replicas:
        raise InputError(
            "--max-replicas",
            f"max_replicas = {max_replicas}, must be >= min_replicas ({min_replicas})",
        )


def load_trace(
    text: str,
    fmt: str | None = None,
    *,
    interval_s: float | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Workload:
    """The workload a `--trace` value names (not rescaled): `synthetic[:SEED]` (seed `seed` when
    none is given), a file (binned at `interval_s`; `seed` drives formats that sample counts), or
    `PATH@START:END`, days START..END of the file (named NAME@START-ENDd unless `name` is given)."""
    if text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        from rlscale.traces.synthetic import default_workload

        _, _, given = text.partition(":")
        try:
            synthetic_seed = int(given) if given else seed
        except ValueError:
            raise InputError(text, "expected synthetic or synthetic:SEED", field="trace") from None
        return default_workload(seed=synthetic_seed)
    from rlscale.evaluation.evaluate import parse_trace_arg
    from rlscale.traces.loaders import load_workload
    from rlscale.traces.transforms import slice_window

    path, days = parse_trace_arg(text)
    w = load_workload(path, fmt, interval_s=interval_s, seed=seed, name=name)
    if days is not None:
        w = slice_window(w, days[0] * 86_400.0, days[1] * 86_400.0)
        if name is None:
            w = w.with_(name=f"{w.name}@{days[0]:g}-{days[1]:g}d")
    return w
