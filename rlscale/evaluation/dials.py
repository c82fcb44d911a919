"""Dials: one policy spec with a swept value, and the two dial options the evaluator applies itself.

A dial template is a policy spec with one `{...}` group, expanded into concrete specs:

    target:{0.5..0.9:0.05}                            0.5, 0.55, ..., 0.9 (both ends included)
    ppo:checkpoints/ppo-llama-3.1-70b-fp8-4xh100#slo_weight={2,5,10,20,50}
    ppo:checkpoints/ppo-llama-3.1-8b-h100#slo_target={0.95,0.98,0.99,0.995,0.999}
    oracle#slo_target={0.95,0.97,0.99,0.995,0.999}
    tuned#target_scale={0.6..1.4:0.2}

Each concrete spec is an ordinary policy spec (`rlscale.policies.registry`): the dials are the
policies' own options, `slo_target=S` (oracle, predictive, static: the SLO target it plans or
sizes for; the workload's scaling stays at the evaluation's `--slo-target`, so every point of a
sweep serves the identical workload) and `target_scale=F` (hpa, tuned: every metric target of
the manifest times F), besides `ppo`'s `slo_weight` (or `slo_target`, on a checkpoint trained
with the SLO-target knob) and `target:U`'s U.
"""

from __future__ import annotations

import math
import re

from rlscale.errors import InputError

_GROUP = re.compile(r"\{([^{}]*)\}")
_EXAMPLES = "e.g. target:{0.5..0.9:0.05} or oracle#slo_target={0.95,0.99,0.999}"


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
