"""SLO classes: the latency targets a service is held to, defined once for simulate, evaluate,
train and control.

A class is a TTFT target that grows with the request's prompt and a flat TPOT target:

    ttft_target_s(prompt_tokens) = ttft_s + ttft_s_per_1k_tokens * prompt_tokens / 1000
    e.g. 2 s + 0.5 s/1k: a 1,000-token prompt has 2.5 s, a 12,000-token one 8 s

Real services set TTFT targets that grow with the prompt, because prefill does: a 2 s target
that a chat request meets with room to spare is out of reach for a 30k-token prompt even on an
idle replica. The flat class (slope 0) is `rlscale.contract`'s DEFAULT_TTFT_SLO_S /
DEFAULT_TPOT_SLO_S, and every code path reads a flat class exactly as the single number it
was (the same floating-point operations), so every result without a class is unchanged.

Buckets (a step per prompt-length range) are not a separate form: a slope through the
buckets' edges is what the simulator, the capacity model and the live guards can all evaluate
at a prompt length, and a step function invites a cliff at each edge.

Where each part of rlscale reads the class:
- the request-level engine (`envs.requests`): every request against its own target;
- the fluid model (`serving.model.serve_interval` and its numba twin): the TTFT quantiles of
  an interval against the target at the prompt quantile of the same rank (long prompts wait
  longest and have the largest targets; `serving.model._share_within_class`);
- capacity, the shield, the oracle and the predictive rule: through the fluid model;
- the live controller (`deploy`): vLLM's TTFT histogram is not split by prompt length, so the
  guards compare the observed TTFT p95 with the class's target at the observed mean prompt
  length (prompt tokens / requests over the interval), `ttft_target_s(mean_prompt_tokens)`.
- the policy's observation (`contract.ObservationSpec.ttft_slo_s`) keeps normalising TTFT by
  the class's base `ttft_s`, so a checkpoint reads latency in the units it was trained in
  whatever the slope; the live controller accepts a class on a checkpoint whose base and TPOT
  match its own (`deploy.policies`).
- `rlscale evaluate` first asks what an idle fleet attains under the class
  (`evaluation.attainable`) and stops with one line when that is below the SLO target.

Spelled on the command line as `--ttft-slo-s SPEC`: a number (`2`, `2s`, `1500ms`) or a base plus
a slope per 1,000 prompt tokens (`2s+0.5s/1k`, `2+0.5/1k`); in YAML configs as the fields
`ttft_s`, `ttft_s_per_1k_tokens`, `tpot_s` (controller) or `ttft_slo_s`,
`ttft_slo_s_per_1k_tokens`, `tpot_slo_s` (training).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from rlscale.contract import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S
from rlscale.errors import InputError

_NUM = r"(\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"
_SPEC = re.compile(
    rf"^\s*(?P<base>{_NUM})\s*(?P<bunit>ms|s)?\s*"
    rf"(?:\+\s*(?P<slope>{_NUM})\s*(?P<sunit>ms|s)?\s*/\s*(?P<per>1k|1000)(?:\s*tok(?:en)?s?)?\s*)?$",
    re.IGNORECASE,
)
SPEC_HELP = (
    "TTFT SLO: seconds (2, 2s, 1500ms) or a base plus a slope per 1,000 prompt tokens "
    "(2s+0.5s/1k: a 12k-token prompt gets 8 s)."
)


@dataclass(frozen=True, slots=True)
class SLOClass:
    """TTFT target `ttft_s + ttft_s_per_1k_tokens * prompt_tokens / 1000` and TPOT target `tpot_s`
    per request. Flat (slope 0) by default: the contract's 2 s / 100 ms."""

    ttft_s: float = DEFAULT_TTFT_SLO_S
    ttft_s_per_1k_tokens: float = 0.0
    tpot_s: float = DEFAULT_TPOT_SLO_S

    def __post_init__(self) -> None:
        for name, low, strict in (
            ("ttft_s", 0.0, True),
            ("ttft_s_per_1k_tokens", 0.0, False),
            ("tpot_s", 0.0, True),
        ):
            v = getattr(self, name)
            ok = (
                isinstance(v, int | float)
                and math.isfinite(v)
                and (v > low if strict else v >= low)
            )
            if not ok:
                raise ValueError(
                    f"{name}: expected a number {'>' if strict else '>='} 0, got {v!r}"
                )

    @property
    def is_flat(self) -> bool:
        return self.ttft_s_per_1k_tokens == 0.0

    def ttft_target_s(self, prompt_tokens: float | np.ndarray) -> float | np.ndarray:
        """TTFT target (s) of a request with this many prompt tokens (exactly `ttft_s` when flat)."""
        if self.is_flat:
            return (
                self.ttft_s
                if np.isscalar(prompt_tokens)
                else np.full(np.shape(prompt_tokens), self.ttft_s)
            )
        return self.ttft_s + self.ttft_s_per_1k_tokens * np.asarray(prompt_tokens) / 1000.0

    def spec(self) -> str:
        """The command-line spelling that parses back to this class's TTFT part."""
        return f"{self.ttft_s:g}s" + ("" if self.is_flat else f"+{self.ttft_s_per_1k_tokens:g}s/1k")

    def describe(self) -> str:
        """'TTFT <= 2 s + 0.5 s per 1k prompt tokens and TPOT <= 100 ms' (for reports)."""
        ttft = f"{self.ttft_s:g} s" + (
            "" if self.is_flat else f" + {self.ttft_s_per_1k_tokens:g} s per 1k prompt tokens"
        )
        return f"TTFT <= {ttft} and TPOT <= {1000 * self.tpot_s:g} ms"

    def as_dict(self) -> dict[str, float]:
        return {
            "ttft_s": self.ttft_s,
            "ttft_s_per_1k_tokens": self.ttft_s_per_1k_tokens,
            "tpot_s": self.tpot_s,
        }


def parse_ttft_spec(text: str | float, *, where: str = "--ttft-slo-s") -> tuple[float, float]:
    """(base s, slope s per 1k prompt tokens) of a TTFT spec: `2`, `2s`, `1500ms`, `2s+0.5s/1k`.
    Bad input is one `InputError` line naming `where`."""
    if isinstance(text, int | float):
        base, slope = float(text), 0.0
    else:
        m = _SPEC.match(str(text))
        if m is None:
            raise InputError(
                where,
                f"expected seconds (2, 2s, 1500ms) or BASE+SLOPE/1k (2s+0.5s/1k), got {text!r}",
            )
        base = _seconds(m["base"], m["bunit"])
        slope = _seconds(m["slope"], m["sunit"]) if m["slope"] is not None else 0.0
    if not (math.isfinite(base) and base > 0):
        raise InputError(where, f"expected a TTFT base > 0 s, got {text!r}")
    if not (math.isfinite(slope) and slope >= 0):
        raise InputError(where, f"expected a slope >= 0 s per 1k tokens, got {text!r}")
    return base, slope


def parse_slo(
    ttft: str | float, tpot_s: float = DEFAULT_TPOT_SLO_S, *, where: str = "--ttft-slo-s"
) -> SLOClass:
    """The class a `--ttft-slo-s SPEC` and a `--tpot-slo-s` give."""
    base, slope = parse_ttft_spec(ttft, where=where)
    if not (math.isfinite(tpot_s) and tpot_s > 0):
        raise InputError("--tpot-slo-s", f"expected a number > 0, got {tpot_s!r}")
    return SLOClass(base, slope, float(tpot_s))


def _seconds(value: str, unit: str | None) -> float:
    v = float(value)
    return v / 1000.0 if unit is not None and unit.lower() == "ms" else v
