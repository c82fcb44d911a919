"""`ServiceProfile`: what one replica of an LLM service costs, how fast it serves, how long it takes
to start. Loaded from YAML and validated where it enters; the numbers of the shipped profiles are
fitted from ../shared/data by `rlscale/profiles/fit.py`, with the fit recorded beside them.

Latency model (continuous batching, per replica, c = requests in flight in the batch):

    TPOT_ms(c, ctx, r) = tpot_base_ms
                         + (tpot_ms_per_seq + tpot_ms_per_seq_per_ktok * ctx/1000
                            + tpot_ms_per_prefill_token * r) * c
    TTFT_ms(c, isl)    = prefill_base_ms + prefill_ms_per_token * isl * (1 + prefill_interference * c / max_batch)
    max concurrency    = min(max_batch, kv_cache_tokens / (isl + osl / 2))   -- the KV-cache knee

where ctx is the mean context a decoding request holds (isl + osl/2) and r = isl / osl is the
number of prompt tokens per output token of the workload. The r term is the prefill work that
chunked prefill piggybacks onto decode steps: in steady state c/osl requests finish and are
replaced per step, each bringing isl prompt tokens, so a step carries c * r prompt tokens. The
measured data need it: for Llama-3.1-8B on one H100 at c = 128, 1k prompts, TPOT is 31.7 ms with
128-token outputs (r = 8) but 19.3 ms with 512-token outputs (r = 2), the opposite of what the
context term alone predicts (see FITS.md: without it TPOT MAPE is 17.5 %, with it 2.3 %).
`tpot_ms_per_prefill_token` defaults to 0, so a profile without it is the plain model.

Past the knee requests queue, and queueing is what makes TTFT explode in the simulator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rlscale.config import load_yaml_model
from rlscale.errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyModel(_Strict):
    tpot_base_ms: float = Field(gt=0)
    tpot_ms_per_seq: float = Field(ge=0)
    tpot_ms_per_seq_per_ktok: float = Field(default=0.0, ge=0)
    tpot_ms_per_prefill_token: float = Field(default=0.0, ge=0)
    prefill_base_ms: float = Field(ge=0)
    prefill_ms_per_token: float = Field(gt=0)
    prefill_interference: float = Field(default=0.0, ge=0)
    kv_cache_tokens: int = Field(gt=0)
    max_batch: int = Field(gt=0)


class Stage(_Strict):
    """One cold-start stage: a triangular distribution (low, mode, high) in seconds, present with
    `probability` (an uncached image pull or a new node happen only sometimes)."""

    name: str
    low_s: float = Field(ge=0)
    mode_s: float = Field(ge=0)
    high_s: float = Field(ge=0)
    probability: float = Field(default=1.0, ge=0, le=1)

    # Field validators (not one model validator) so the error names the offending field,
    # e.g. `cold_start.2.mode_s`; a bound that failed its own check is absent from info.data.
    @field_validator("mode_s")
    @classmethod
    def _mode_not_below_low(cls, v: float, info: ValidationInfo) -> float:
        low = info.data.get("low_s")
        if low is not None and v < low:
            raise ValueError(f"stage {info.data.get('name')!r}: mode_s must be >= low_s ({low})")
        return v

    @field_validator("high_s")
    @classmethod
    def _high_not_below_mode(cls, v: float, info: ValidationInfo) -> float:
        mode = info.data.get("mode_s", info.data.get("low_s"))
        if mode is not None and v < mode:
            raise ValueError(f"stage {info.data.get('name')!r}: high_s must be >= mode_s ({mode})")
        return v

    @property
    def mean_s(self) -> float:
        return self.probability * (self.low_s + self.mode_s + self.high_s) / 3.0


class ServiceProfile(_Strict):
    name: str
    model: str
    gpu: str
    gpus_per_replica: int = Field(gt=0)
    precision: Literal["bf16", "fp16", "fp8", "fp4"] = "bf16"
    backend: str = "vllm"
    latency: LatencyModel
    cold_start: list[Stage] = Field(min_length=1)
    warm_wake: Stage
    gpu_usd_per_hour: float = Field(gt=0)
    typical_prompt_tokens: float = Field(default=1024, gt=0)
    typical_output_tokens: float = Field(default=256, gt=0)
    sources: dict[str, str] = Field(default_factory=dict)

    # --- latency -------------------------------------------------------------------------
    def tpot_ms(
        self,
        concurrency: np.ndarray | float,
        context_tokens: np.ndarray | float,
        prompt_tokens_per_output_token: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """Mean time per output token (ms) at `concurrency` requests in flight holding
        `context_tokens` each on average; `prompt_tokens_per_output_token` (isl / osl of the
        workload) defaults to the profile's typical request. All arguments broadcast."""
        lat = self.latency
        if prompt_tokens_per_output_token is None:
            prompt_tokens_per_output_token = self.typical_prompt_tokens / self.typical_output_tokens
        slope = (
            lat.tpot_ms_per_seq
            + lat.tpot_ms_per_seq_per_ktok * np.asarray(context_tokens) / 1000.0
            + lat.tpot_ms_per_prefill_token * np.asarray(prompt_tokens_per_output_token)
        )
        return lat.tpot_base_ms + slope * np.asarray(concurrency)

    def ttft_ms(
        self, concurrency: np.ndarray | float, prompt_tokens: np.ndarray | float
    ) -> np.ndarray:
        lat = self.latency
        interference = 1.0 + lat.prefill_interference * np.asarray(concurrency) / lat.max_batch
        return (
            lat.prefill_base_ms
            + lat.prefill_ms_per_token * np.asarray(prompt_tokens) * interference
        )

    def max_concurrency(
        self, prompt_tokens: float | None = None, output_tokens: float | None = None
    ) -> float:
        isl = self.typical_prompt_tokens if prompt_tokens is None else prompt_tokens
        osl = self.typical_output_tokens if output_tokens is None else output_tokens
        return float(min(self.latency.max_batch, self.latency.kv_cache_tokens / (isl + osl / 2.0)))

    def capacity_rps(
        self, prompt_tokens: float | None = None, output_tokens: float | None = None
    ) -> float:
        """Requests/s one replica completes at its knee: c_max / (prefill + osl * TPOT(c_max))."""
        isl = self.typical_prompt_tokens if prompt_tokens is None else prompt_tokens
        osl = self.typical_output_tokens if output_tokens is None else output_tokens
        c = self.max_concurrency(isl, osl)
        service_s = (
            self.ttft_ms(c, isl) + osl * self.tpot_ms(c, isl + osl / 2.0, isl / osl)
        ) / 1000.0
        return float(c / service_s)

    # --- cold start ----------------------------------------------------------------------
    @property
    def mean_cold_start_s(self) -> float:
        return float(sum(s.mean_s for s in self.cold_start))

    def sample_cold_start_s(
        self, rng: np.random.Generator, size: int | tuple[int, ...]
    ) -> np.ndarray:
        total = np.zeros(size)
        for s in self.cold_start:
            if s.high_s > s.low_s:
                draw = rng.triangular(s.low_s, s.mode_s, s.high_s, size)
            else:
                draw = np.full(size, s.low_s)
            if s.probability < 1.0:
                draw = draw * (rng.random(size) < s.probability)
            total += draw
        return total

    def sample_wake_s(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        s = self.warm_wake
        if s.high_s > s.low_s:
            return rng.triangular(s.low_s, s.mode_s, s.high_s, size)
        return np.full(size, s.low_s)

    @property
    def replica_usd_per_hour(self) -> float:
        return self.gpu_usd_per_hour * self.gpus_per_replica


PROFILE_DIR = Path(__file__).parent


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> ServiceProfile:
    """Load a shipped profile by name (`llama-3.1-8b-h100`) or a YAML file by path."""
    path = Path(name_or_path)
    # A name, not a path, when it has no directory and no YAML suffix. (Not `not path.suffix`:
    # `Path("llama-3.1-8b-h100").suffix` is ".1-8b-h100".)
    if path.suffix not in (".yaml", ".yml") and path.parent == Path("."):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise InputError(
                str(name_or_path),
                f"no such profile; shipped profiles: {', '.join(shipped_profiles())}",
            )
    return load_yaml_model(path, ServiceProfile)
