"""Dials: one policy spec with a swept value, and the two dial options the evaluator applies itself.

A dial template is a policy spec with one `{...}` group, expanded into concrete specs:

    target:{0.5..0.9:0.05}                            0.5, 0.55, ..., 0.9 (both ends included)
    ppo:checkpoints/ppo-llama-3.1-8b-h100#slo_weight={2,5,10,20,50}
    oracle#slo_target={0.95,0.97,0.99,0.995,0.999}
    tuned#target_scale={0.6..1.4:0.2}

Two options are the evaluator's, not the policy factory's (`rlscale.policies.registry` knows
neither): it strips them before `make_policy` and applies them itself, so every other policy is
built exactly as `make_policy` builds it.

- `slo_target=S` (oracle, predictive, static): the SLO target the policy plans or sizes for,
  passed as `make_policy(..., slo_target=S)`; the workload's scaling stays at the evaluation's
  `--slo-target`, so every point of a sweep serves the identical workload.
- `target_scale=F` (hpa, tuned): every metric target of the manifest times F (F < 1 scales out
  earlier, so it buys SLO with cost); the manifest's behaviour (its limits) is kept.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rlscale.errors import InputError
from rlscale.policies.registry import PolicyFactory, PolicySpec, make_policy

if TYPE_CHECKING:
    from rlscale.policies.hpa import HPAConfig

_GROUP = re.compile(r"\{([^{}]*)\}")
_EXAMPLES = "e.g. target:{0.5..0.9:0.05} or oracle#slo_target={0.95,0.99,0.999}"
SLO_TARGET_KINDS = ("oracle", "predictive", "static")
TARGET_SCALE_KINDS = ("hpa", "tuned")


def expand_dial(template: str, where: str = "--frontier") -> tuple[list[str], list[float]]:
    """The concrete specs of a dial template and the dial's values, in the order written."""
    groups = _GROUP.findall(template)
    if len(groups) != 1 or template.count("{") != 1 or template.count("}") != 1:
        raise InputError(
            where,
            f"{template!r}: expected exactly one {{...}} group of dial values, {_EXAMPLES}",
            field="frontier",
        )
    values = _dial_values(groups[0].strip(), template, where)
    return [_GROUP.sub(f"{v:g}", template) for v in values], values


def _dial_values(body: str, template: str, where: str) -> list[float]:
    def fail(problem: str) -> InputError:
        return InputError(where, f"{template!r}: {problem}, {_EXAMPLES}", field="frontier")

    try:
        if ".." in body:
            lo_txt, _, rest = body.partition("..")
            hi_txt, sep, step_txt = rest.partition(":")
            if not sep:
                raise fail("a range needs a step, {LO..HI:STEP}")
            lo, hi, step = float(lo_txt), float(hi_txt), float(step_txt)
            if not (step > 0 and hi >= lo):
                raise fail(f"expected LO <= HI and STEP > 0, got {body}")
            n = int(math.floor((hi - lo) / step + 1e-9))
            # rounded so 0.5 + 3 x 0.05 reads 0.65, not 0.6500000000000001
            values = [round(lo + i * step, 10) for i in range(n + 1)]
        else:
            values = [float(x) for x in body.split(",") if x.strip()]
    except ValueError:
        raise fail(f"cannot read the values {body!r}") from None
    if not values:
        raise fail("no dial values")
    if len(set(values)) != len(values):
        raise fail("a dial value is repeated")
    return values


@dataclass(frozen=True)
class DialOptions:
    """The evaluator's own options of one spec (None: not set)."""

    slo_target: float | None = None
    target_scale: float | None = None


def split_spec(text: str, where: str = "policy") -> tuple[str, DialOptions]:
    """`text` without the evaluator's options (a spec `make_policy` reads) and those options;
    the remaining spec is checked by `PolicySpec.parse`."""
    head, sep, opts = str(text).strip().partition("#")
    kind = head.partition(":")[0].strip().lower()
    keep: list[str] = []
    found: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in opts.split(","))):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in ("slo_target", "target_scale"):
            keep.append(item)
            continue
        kinds = SLO_TARGET_KINDS if key == "slo_target" else TARGET_SCALE_KINDS
        if kind not in kinds:
            raise InputError(
                where, f"{text}: option {key!r} is for {', '.join(kinds)} only", field="policy"
            )
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        ok = 0 < v < 1 if key == "slo_target" else 0 < v < math.inf
        if not ok:
            expected = "0 < S < 1" if key == "slo_target" else "F > 0"
            raise InputError(
                where, f"{text}: expected {key}={expected}, got {value!r}", field="policy"
            )
        found[key] = v
    rest = head + ("#" + ",".join(keep) if keep else "")
    PolicySpec.parse(rest, where)
    if kind == "static" and "slo_target" in found and ":" in head:
        raise InputError(
            where, f"{text}: static:N serves N replicas, slo_target is for static", field="policy"
        )
    return rest, DialOptions(**found)


def build_policy(text: str, *, slo_target: float, **context: Any) -> PolicyFactory:
    """`make_policy(text, ...)` with the evaluator's options applied (module doc); a spec with
    neither is exactly `make_policy`'s factory."""
    spec, opts = split_spec(text)
    f = make_policy(
        spec,
        slo_target=opts.slo_target if opts.slo_target is not None else slo_target,
        **context,
    )
    if opts.slo_target is not None:
        f = replace(
            f,
            spec=text,
            name=f"{f.name}#slo_target={opts.slo_target:g}",
            info={**f.info, "slo_target": opts.slo_target},
        )
    if opts.target_scale is not None:
        f = _scaled_hpa(f, text, opts.target_scale)
    return f


def _scaled_hpa(f: PolicyFactory, text: str, factor: float) -> PolicyFactory:
    from rlscale.policies.hpa import HPAPolicy

    base = f.build(0)
    if not isinstance(base, HPAPolicy):  # split_spec allows hpa and tuned only
        raise InputError(text, "target_scale is for HPA manifests only", field="policy")
    cfg = scale_targets(base.config, factor)
    name = f"{f.name}#target_scale={factor:g}"
    return replace(
        f,
        spec=text,
        name=name,
        build=lambda seed: HPAPolicy(cfg, name=name),
        info={**f.info, "target_scale": factor},
    )


def scale_targets(cfg: HPAConfig, factor: float) -> HPAConfig:
    """The manifest's every metric target times `factor`, its behaviour unchanged."""
    return replace(cfg, metrics=tuple(replace(m, target=m.target * factor) for m in cfg.metrics))
