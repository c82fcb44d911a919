"""`rlscale train`: PPO (stable-baselines3) on the batched simulator, described by one YAML config.

The run, top to bottom (`train`):

1. config: `TrainConfig.load(path, overrides)` — YAML validated by pydantic where it enters
   (`rlscale.config`), every field overridable with `--set ppo.learning_rate=1e-4`; the resolved
   config goes into the checkpoint;
2. seeding: one block (python, numpy, torch, SB3, the env's generator);
3. workloads: each trace is loaded at the control interval, cut to its window (`PATH@START:END`
   in days, as `rlscale evaluate --trace` spells it) and rate-scaled to `copies` fleet sizes
   drawn from `peak_replicas` (domain randomisation, together with `augmentation` noise/bursts
   and the env's cold-start and latency jitter);
4. env: `LLMAutoscaleVecEnv` (B clusters in numpy) under SB3's `VecNormalize`;
5. model: SB3 `PPO` with SB3's hyperparameter names; TensorBoard logs under `tensorboard_log`;
6. evaluator: the baseline is rolled out once on the held-out windows; every
   `eval.every_steps` the current policy is rolled out on them too (`rlscale.evaluation.rollout`,
   the evaluator's own harness; bare, or behind the run-time shield with `eval.shielded`), the
   best checkpoint is kept and the curve (score vs steps and wall time)
   written beside it;
7. `learn`, then the final checkpoint (`checkpoints/<name>/`, see rlscale.policies.checkpoint).

Score (higher is better), per eval workload then averaged: with `eval.slo_penalty: shortfall`
(the default) -(cost / baseline cost + eval_slo_weight x max(0, baseline SLO - SLO)), the shape of
issue #6's requirement (cheaper than the baseline at an SLO attainment no lower than its), so
the baseline scores -1 and attainment above the baseline's earns nothing; with `miss`,
-(cost / baseline cost + eval_slo_weight x (1 - SLO)), which also rewards attainment above it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from rlscale.config import load_yaml_model, validate_model
from rlscale.contract import DEFAULT_SLO_TARGET, ObservationSpec, rows_needed, slo_weight_at_target
from rlscale.envs.core import EnvConfig
from rlscale.envs.lagrange import SLOMultipliers
from rlscale.errors import InputError
from rlscale.evaluation.evaluate import parse_trace_arg
from rlscale.policies.base import Policy
from rlscale.policies.checkpoint import sha256_file
from rlscale.policies.registry import PolicyFactory, PolicySpec
from rlscale.profiles.model import ServiceProfile, load_profile
from rlscale.safety import SafetyLimits
from rlscale.serving.model import SimConfig
from rlscale.serving.shield import ShieldConfig
from rlscale.traces.workload import Workload

if TYPE_CHECKING:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from rlscale.envs.vec_env import LLMAutoscaleVecEnv
    from rlscale.policies.checkpoint import PPOPolicy

REPO_ROOT = Path(__file__).resolve().parents[2]
_DAY_S = 86_400.0
# workload -> (factory(seed) -> Policy, the limits to clamp it by)
Runner = Callable[[Workload], tuple[Callable[[int], Policy], SafetyLimits]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkloadSpec(_Strict):
    """One trace and how it is cut and scaled. `path` = `PATH` or `PATH@START:END`, the window in
    days from the trace's start (`x.csv@10:10.5` = hours 240-252); `peak_replicas` = the range
    of fleet sizes (replicas the p99 minute needs) the trace is scaled to; `copies` = how many
    scaled copies are drawn from that range. `prompt_scale` / `output_scale` = ranges that each
    copy's request sizes are multiplied by (log-uniform; the request-mix shifts a policy must
    hold up under: a 12k-token-prompt service is the chat trace with prompts x10), the fleet
    sized at the new mix."""

    path: str
    format: str | None = None
    name: str | None = None
    peak_replicas: tuple[float, float] = (4.0, 16.0)
    prompt_scale: tuple[float, float] = (1.0, 1.0)
    output_scale: tuple[float, float] = (1.0, 1.0)
    copies: int = Field(default=1, ge=1, le=64)
    seed: int = 0
    # the old spelling, refused with its conversion (never stored: excluded from the dump)
    slice_h: Any = Field(default=None, exclude=True)

    @field_validator("path")
    @classmethod
    def _window(cls, v: str) -> str:
        try:
            parse_trace_arg(v)
        except InputError as e:
            raise ValueError(e.problem) from None
        return v

    @field_validator("slice_h")
    @classmethod
    def _no_slice_h(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return v
        path = parse_trace_arg(info.data["path"])[0] if "path" in info.data else "PATH"
        try:
            a, b = (float(x) / 24.0 for x in v)
            example = f"path: {path}@{a:g}:{b:g}"
        except (TypeError, ValueError):
            example = f"path: {path}@START:END"
        raise ValueError(
            f"`slice_h` (hours) is gone: give the window in days in the path, `{example}`"
        )

    @model_validator(mode="after")
    def _ranges(self) -> WorkloadSpec:
        for name in ("peak_replicas", "prompt_scale", "output_scale"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi):
                raise ValueError(f"{name} = [{lo}, {hi}], expected 0 < low <= high")
        return self

    @property
    def file(self) -> str:
        """The trace file, without its window."""
        return parse_trace_arg(self.path)[0]

    @property
    def days(self) -> tuple[float, float] | None:
        """The [start, end) window in days, or None for the whole trace."""
        return parse_trace_arg(self.path)[1]


class Augmentation(_Strict):
    """`rlscale.traces.transforms.augment`'s domain randomisation, per workload copy. `noise_cv`
    is one CV or a range [lo, hi] that each copy draws its CV from (log-uniform), one lognormal
    multiplier per `noise_block_s` of arrivals (15 s: every control interval its own level, the
    burstiness a 10-minute total does not have)."""

    noise_cv: tuple[float, float] = (0.0, 0.0)
    noise_block_s: float = Field(default=60.0, gt=0, le=3600)
    bursts_per_day: float = Field(default=0.0, ge=0, le=200)
    burst_magnitude: tuple[float, float] = (1.5, 3.0)

    @field_validator("noise_cv", mode="before")
    @classmethod
    def _cv(cls, v: Any) -> Any:
        lo, hi = (v, v) if isinstance(v, int | float) else v
        if not (0 <= lo <= hi <= 2) or (lo == 0 < hi):
            raise ValueError(
                f"noise_cv = {v}, expected a CV in 0..2 or a range [low, high] with 0 < low <= high <= 2"
            )
        return (float(lo), float(hi))

    @property
    def active(self) -> bool:
        return self.noise_cv[1] > 0 or self.bursts_per_day > 0


class PPOParams(_Strict):
    """SB3 PPO's hyperparameters, spelled as SB3 spells them (net_arch/activation go to policy_kwargs)."""

    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    # CleanRL's `anneal_lr`: the rate falls linearly to 0 over `total_timesteps` (late updates
    # refine the policy rather than move it: the constant rate's snapshots swing by several
    # per cent of validation score between 1M-step evaluations)
    anneal_lr: bool = False
    n_steps: int = Field(default=256, ge=8)
    batch_size: int = Field(default=1024, ge=8)
    n_epochs: int = Field(default=5, ge=1, le=100)
    gamma: float = Field(default=0.99, gt=0, le=1)
    gae_lambda: float = Field(default=0.95, gt=0, le=1)
    clip_range: float = Field(default=0.2, gt=0, le=1)
    ent_coef: float = Field(default=0.0, ge=0)
    vf_coef: float = Field(default=0.5, ge=0)
    max_grad_norm: float = Field(default=0.5, gt=0)
    target_kl: float | None = None
    log_std_init: float = -0.5
    net_arch: list[int] = [64, 64]
    activation: Literal["tanh", "relu"] = "tanh"


class Normalize(_Strict):
    clip_obs: float = Field(default=10.0, gt=0)
    norm_reward: bool = True


class EvalSpec(_Strict):
    every_steps: int = Field(default=100_000, ge=1)
    seeds: list[int] = [0, 1]
    workloads: list[WorkloadSpec] = []
    # a policy spec: "tuned", "hpa", "threshold", ... (rlscale.policies.registry, each under its
    # own limits), or "target:U" = target utilisation U of demand (arrivals + queue / 60 s) under
    # the training limits
    baseline: str = "tuned"
    slo_weight: float = Field(
        default=20.0, ge=0
    )  # score penalty per unit of SLO miss (or shortfall)
    slo_penalty: Literal["shortfall", "miss"] = "shortfall"
    # cost/SLO knob settings tried at every evaluation besides `env.reward.slo`; the best-scoring
    # (step, setting) pair is kept and its setting becomes the checkpoint's default knob
    slo_weights: list[float] = []
    # with `env.slo_target` (the knob as an SLO-attainment target): the targets tried at every
    # evaluation, each at its multiplier of that moment; the best-scoring (step, target) pair is
    # kept and its target becomes the checkpoint's default
    slo_targets: list[float] = [DEFAULT_SLO_TARGET]
    # also evaluate the untrained policy (step 0), so the curve shows what training added
    at_start: bool = True
    # true: score the learned policy behind the run-time shield (`env.shield`, else the shield's
    # defaults), as `rlscale evaluate` and the controller serve it. Off by default: behind the
    # default shield the 8B steps from 1M to 6M scored -1.221 to -1.206 (its consolidation check
    # sets the fleet), so the shielded score hardly tells checkpoints apart; the bare one can
    shielded: bool = False

    @field_validator("baseline")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        return str(PolicySpec.parse(v, "eval.baseline"))


class TrainConfig(_Strict):
    name: str
    profile: str = "llama-3.1-8b-h100"
    seed: int = 0
    n_envs: int = Field(default=16, ge=1, le=1024)
    total_timesteps: int = Field(default=1_000_000, ge=1)
    out: str = "checkpoints/{name}"
    tensorboard_log: str | None = "runs"
    torch_threads: int = Field(default=1, ge=1)
    env: EnvConfig = EnvConfig()
    workloads: list[WorkloadSpec]
    augmentation: Augmentation = Augmentation()
    ppo: PPOParams = PPOParams()
    normalize: Normalize = Normalize()
    eval: EvalSpec = EvalSpec()

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
        return load_yaml_model(path, cls, overrides=overrides, what="training config")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str | Path = "config") -> TrainConfig:
        return validate_model(raw, cls, str(where))

    def out_dir(self) -> Path:
        return Path(self.out.format(name=self.name))


def resolve_path(path: str) -> Path:
    """A trace path as given, else relative to the repository root (configs say ../shared/data)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    q = REPO_ROOT / path
    return q if q.exists() else p


def build_workloads(
    specs: Sequence[WorkloadSpec],
    profile: ServiceProfile,
    interval_s: float,
    rng: np.random.Generator,
    aug: Augmentation | None = None,
) -> list[Workload]:
    """Load, cut to the window, scale (and augment) every spec into its copies."""
    from rlscale.serving.capacity import replica_capacity_rps
    from rlscale.traces.loaders import load_workload
    from rlscale.traces.transforms import augment, scale_to_fleet, slice_window

    out: list[Workload] = []
    # the profile's reference capacity, rescaled to each copy's mix by the serving model's knee
    ref_cap, ref_knee = profile.capacity_rps(), replica_capacity_rps(profile)
    for spec in specs:
        base = load_workload(
            resolve_path(spec.file),
            spec.format,
            interval_s=interval_s,
            seed=spec.seed,
            name=spec.name,
        )
        if spec.days is not None:
            base = slice_window(base, spec.days[0] * _DAY_S, spec.days[1] * _DAY_S)
        lo, hi = spec.peak_replicas
        for k in range(spec.copies):
            peak = (
                lo
                if spec.copies == 1 and lo == hi
                else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            )
            sized, tag = base, ""
            if spec.prompt_scale != (1.0, 1.0) or spec.output_scale != (1.0, 1.0):
                kp = _log_uniform(rng, spec.prompt_scale)
                ko = _log_uniform(rng, spec.output_scale)
                sized = base.with_(
                    prompt_tokens=base.prompt_tokens * kp, output_tokens=base.output_tokens * ko
                )
                tag = f"~p{kp:.1f}o{ko:.2f}"
            n = max(sized.total_requests, 1e-9)
            isl = float((sized.arrivals * sized.prompt_tokens).sum() / n)
            osl = float((sized.arrivals * sized.output_tokens).sum() / n)
            cap = ref_cap * replica_capacity_rps(profile, isl, osl) / ref_knee
            w = scale_to_fleet(sized, peak, cap)
            if aug is not None and aug.active:
                w = augment(
                    w,
                    rng,
                    noise_cv=_log_uniform(rng, aug.noise_cv),  # one CV: no draw
                    noise_block_s=aug.noise_block_s,
                    bursts_per_day=aug.bursts_per_day,
                    burst_magnitude=aug.burst_magnitude,
                )
            out.append(
                w.with_(name=f"{base.name}@{peak:.1f}{tag}" + (f"#{k}" if spec.copies > 1 else ""))
            )
    return out


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return lo if lo == hi else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def baseline_runner(spec: str, profile: ServiceProfile, cfg: TrainConfig) -> Runner:
    """How the baseline runs on a workload, resolved by the one policy factory as `rlscale
    evaluate` resolves it: each rule under its own limits, `target:U` (the action map with a fixed
    u) under the training limits, as the learned policy runs."""
    from rlscale.policies.registry import make_policy

    sim_cfg = eval_sim_config(cfg)
    limits = cfg.env.limits if PolicySpec.parse(spec).kind == "target" else None

    def via_registry(w: Workload) -> tuple[Callable[[int], Policy], SafetyLimits]:
        f = make_policy(spec, profile=profile, workload=w, config=sim_cfg, limits=limits)
        return f, f.limits

    return via_registry


def fixed_runner(policy: Policy, limits: SafetyLimits, window: int = 1) -> Runner:
    """The same policy object on every workload and seed, under `limits`, shown the last
    `window` intervals (a PPO policy: `contract.rows_needed` of its spec, as the controller
    shows it; the selection of the checkpoints before 2026-12-04 saw 8 of their 12)."""
    factory = PolicyFactory("fixed", "fixed", limits, lambda seed: policy, window=window)

    def run(w: Workload) -> tuple[Callable[[int], Policy], SafetyLimits]:
        return factory, limits

    return run


def eval_sim_config(cfg: TrainConfig) -> SimConfig:
    """The training simulator without its jitter: every evaluation sees the same service."""
    return replace(cfg.env.sim_config(), latency_jitter=0.0, cold_start_jitter=0.0)


def summarise(rollouts: list[Any]) -> tuple[float, float]:
    cost = float(np.mean([s.cost_usd for r in rollouts for s in r.summaries]))
    slo = float(np.mean([s.slo_attainment for r in rollouts for s in r.summaries]))
    return cost, slo


def evaluate_policy(
    runner: Runner,
    profile: ServiceProfile,
    workloads: Sequence[Workload],
    cfg: TrainConfig,
    seeds: Sequence[int],
    shield: ShieldConfig | None | str = "auto",
) -> list[dict[str, Any]]:
    """Per workload: mean cost and SLO attainment over seeds, each policy under its own limits
    (and `shield`: a config, None, or "auto" = the default of the policy's kind)."""
    from rlscale.evaluation.rollout import rollout

    sim_cfg = eval_sim_config(cfg)
    out: list[dict[str, Any]] = []
    for w in workloads:
        make, limits = runner(w)
        r = rollout(make, profile, w, seeds=seeds, limits=limits, config=sim_cfg, shield=shield)
        cost, slo = summarise([r])
        out.append({"workload": w.name, "cost_usd": cost, "slo_attainment": slo})
    return out


def score(
    results: Sequence[dict[str, Any]],
    ref: Sequence[dict[str, Any]],
    slo_weight: float,
    penalty: Literal["shortfall", "miss"] = "shortfall",
) -> float:
    """Mean over workloads of -(cost / reference cost + slo_weight x SLO penalty); see the module
    docstring. `results` and `ref` are per-workload rows in the same order."""

    def slo_term(r: dict[str, Any], b: dict[str, Any]) -> float:
        if penalty == "shortfall":
            return max(0.0, b["slo_attainment"] - r["slo_attainment"])
        return 1.0 - r["slo_attainment"]

    return -float(
        np.mean(
            [
                r["cost_usd"] / max(b["cost_usd"], 1e-9) + slo_weight * slo_term(r, b)
                for r, b in zip(results, ref, strict=True)
            ]
        )
    )


def set_seeds(seed: int, threads: int) -> None:
    """The one seeding block: python, numpy, torch (and SB3's own helper, which seeds the same)."""
    import torch
    from stable_baselines3.common.utils import set_random_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    set_random_seed(seed)


def make_env(
    cfg: TrainConfig, profile: ServiceProfile, workloads: Sequence[Workload]
) -> VecNormalize:
    """B simulated clusters over the training workloads, observations (and rewards) normalised."""
    from stable_baselines3.common.vec_env import VecNormalize

    from rlscale.envs.vec_env import LLMAutoscaleVecEnv

    venv = LLMAutoscaleVecEnv(profile, list(workloads), cfg.n_envs, cfg.env, seed=cfg.seed)
    return VecNormalize(
        venv,
        norm_obs=True,
        norm_reward=cfg.normalize.norm_reward,
        clip_obs=cfg.normalize.clip_obs,
        gamma=cfg.ppo.gamma,
    )


def _linear(initial: float) -> Callable[[float], float]:
    """SB3 schedule: `progress_remaining` runs 1 -> 0 over the run."""

    def rate(progress_remaining: float) -> float:
        return initial * progress_remaining

    return rate


def make_model(cfg: TrainConfig, env: VecNormalize, verbose: int = 0) -> PPO:
    """SB3 PPO with the config's hyperparameters (SB3's names), actor and critic of `net_arch`."""
    import torch
    from stable_baselines3 import PPO

    p = cfg.ppo
    act_fn = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[p.activation]
    return PPO(
        "MlpPolicy",
        env,
        learning_rate=_linear(p.learning_rate) if p.anneal_lr else p.learning_rate,
        n_steps=p.n_steps,
        batch_size=p.batch_size,
        n_epochs=p.n_epochs,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=p.ent_coef,
        vf_coef=p.vf_coef,
        max_grad_norm=p.max_grad_norm,
        target_kl=p.target_kl,
        policy_kwargs={
            "net_arch": {"pi": list(p.net_arch), "vf": list(p.net_arch)},
            "activation_fn": act_fn,
            "log_std_init": p.log_std_init,
        },
        tensorboard_log=cfg.tensorboard_log,
        seed=cfg.seed,
        verbose=verbose,
        device="cpu",
    )


@dataclass
class Learner:
    """The model as it trains, with what turns it into a served policy or a checkpoint."""

    cfg: TrainConfig
    profile: ServiceProfile
    model: PPO
    env: VecNormalize
    workload_hashes: dict[str, str | None] = field(default_factory=dict)

    @property
    def knob(self) -> bool:
        return self.cfg.env.knob

    @property
    def multipliers(self) -> SLOMultipliers | None:
        """The SLO-target knob's multiplier table as it is now (None: no target knob)."""
        return cast("LLMAutoscaleVecEnv", self.env.venv).core.multipliers

    def knob_settings(self) -> list[tuple[float | None, float]]:
        """(SLO target or None, SLO weight) pairs tried at an evaluation: the targets at their
        multipliers of this moment, or the weight knob's settings (the training default first)."""
        m, cfg = self.multipliers, self.cfg
        if m is not None:
            table = m.table()
            return [
                (t, float(slo_weight_at_target(t, table["slo_targets"], table["slo_weights"])))
                for t in cfg.eval.slo_targets
            ]
        extra = cfg.eval.slo_weights if self.knob else []
        return [(None, w) for w in dict.fromkeys([cfg.env.reward.slo, *extra])]

    @property
    def obs_spec(self) -> ObservationSpec:
        return self.cfg.env.observation_spec(self.profile)

    def policy(self, slo_weight: float) -> PPOPolicy:
        """The served policy of the model as it is now, at cost/SLO knob `slo_weight`."""
        from rlscale.training.ppo import policy_from_model

        p = self.cfg.ppo
        return policy_from_model(
            self.model,
            self.env,
            self.obs_spec,
            self.cfg.env.action_spec(),
            hidden=list(p.net_arch),
            activation=p.activation,
            limits=self.cfg.env.limits,
            knob=self.knob,
            slo_weight=slo_weight,
        )

    def save(
        self,
        folder: Path,
        evaluation: dict[str, Any],
        curve: list[dict[str, Any]],
        default_slo_weight: float,
        default_slo_target: float | None = None,
    ) -> None:
        """A checkpoint of the model as it is now, resumable (`train_state.safetensors`)."""
        from safetensors.torch import save_file

        from rlscale.policies.checkpoint import save_checkpoint
        from rlscale.training.ppo import actor_state, full_state, obs_norm_of, obs_size

        cfg, env = self.cfg, self.env
        tensors, state_extra = full_state(self.model, env)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / "train_state.safetensors"))
        save_checkpoint(
            folder,
            actor_state=actor_state(self.model),
            hidden=list(cfg.ppo.net_arch),
            activation=cfg.ppo.activation,
            obs_norm=obs_norm_of(env, obs_size(self.model)),
            obs_spec=self.obs_spec,
            act_spec=cfg.env.action_spec(),
            limits=cfg.env.limits,
            knob=self.knob,
            extra={
                "name": cfg.name,
                "profile": {"name": self.profile.name, "sha256": _profile_hash(cfg.profile)},
                "slo": {
                    "ttft_slo_s": cfg.env.ttft_slo_s,
                    "tpot_slo_s": cfg.env.tpot_slo_s,
                    "ttft_slo_s_per_1k_tokens": cfg.env.ttft_slo_s_per_1k_tokens,
                },
                "reward": cfg.env.reward.model_dump(),
                "default_slo_weight": default_slo_weight,
                "slo_weight_range": list(cfg.env.slo_weight_range)
                if cfg.env.slo_weight_range is not None
                else None,
                **self._target_knob(default_slo_target),
                "training_config": cfg.model_dump(mode="json"),
                "workloads": self.workload_hashes,
                "train_state": {**state_extra, "file": "train_state.safetensors"},
                "evaluation": evaluation,
            },
            extra_files={
                "training_curve.json": _curve_json(curve),
                "train_state.safetensors": None,
            },
        )

    def _target_knob(self, default_slo_target: float | None) -> dict[str, Any]:
        """The manifest's SLO-target knob: the range, the multiplier table, the default target."""
        m = self.multipliers
        if m is None:
            return {}
        return {
            "slo_target_range": list(m.knob.range),
            "slo_multipliers": m.table(),
            "default_slo_target": default_slo_target
            if default_slo_target is not None
            else DEFAULT_SLO_TARGET,
        }


def workload_hashes(cfg: TrainConfig) -> dict[str, str | None]:
    """sha256 of every trace file the run reads (None: not found here), by file path."""
    out: dict[str, str | None] = {}
    for spec in [*cfg.workloads, *cfg.eval.workloads]:
        rp = resolve_path(spec.file)
        out[spec.file] = sha256_file(rp) if rp.exists() else None
    return out


@dataclass(frozen=True)
class Baseline:
    """The baseline's results on the evaluation windows, computed once per run."""

    spec: str
    results: list[dict[str, Any]]
    score: float


def evaluate_baseline(
    cfg: TrainConfig, profile: ServiceProfile, workloads: Sequence[Workload]
) -> Baseline:
    if not workloads:
        return Baseline(cfg.eval.baseline, [], float("nan"))
    runner = baseline_runner(cfg.eval.baseline, profile, cfg)
    results = evaluate_policy(runner, profile, workloads, cfg, cfg.eval.seeds)
    return Baseline(
        cfg.eval.baseline,
        results,
        score(results, results, cfg.eval.slo_weight, cfg.eval.slo_penalty),
    )


class Evaluator:
    """Scores the learner against the baseline at each evaluation, keeps the curve and writes the
    best checkpoint (best score over every (step, knob setting) pair) to `out`."""

    def __init__(
        self,
        learner: Learner,
        workloads: Sequence[Workload],
        baseline: Baseline,
        out: Path,
        curve: list[dict[str, Any]],
        log: Callable[[str], None] = print,
    ) -> None:
        self.learner, self.workloads, self.baseline, self.out, self.log = (
            learner,
            list(workloads),
            baseline,
            out,
            log,
        )
        self.curve = curve
        self.best_score = -math.inf
        self.wall_before_s = curve[-1]["wall_s"] if curve else 0.0
        self.t0 = time.perf_counter()

    def evaluate(self, steps: int, logger: Any | None = None) -> None:
        if not self.workloads:
            return
        cfg = self.learner.cfg
        tried = []
        for target, w in self.learner.knob_settings():
            res = self._results(w)
            tried.append((self._score(res), w, target, res))
        sc, slo_weight, slo_target, res = max(tried, key=lambda t: t[0])
        wall_s = self.wall_before_s + time.perf_counter() - self.t0
        point = self._curve_point(
            steps,
            wall_s,
            sc,
            slo_weight,
            res,
            {str(w if t is None else t): s for s, w, t, _ in tried},
        )
        if slo_target is not None:
            point["slo_target"] = slo_target
            point["slo_multipliers"] = self.learner.multipliers.table()  # type: ignore[union-attr]
        self.curve.append(point)
        if logger is not None:
            for k in ("score", "baseline_score", "cost_vs_baseline", "slo_attainment"):
                logger.record(f"eval/{k}", point[k])
        knob = (
            f"{slo_weight:g}" if slo_target is None else f"{slo_weight:.3g} (target {slo_target:g})"
        )
        self.log(
            f"[train] {steps} steps, {wall_s:.0f} s: score {sc:.3f} at knob {knob} "
            f"(baseline {self.baseline.score:.3f}), cost x{point['cost_vs_baseline']:.3f}, "
            f"SLO {point['slo_attainment']:.4f} (baseline {point['baseline_slo_attainment']:.4f})"
        )
        if sc > self.best_score:
            self.best_score = sc
            evaluation = {
                "baseline": self.baseline.spec,
                "seeds": cfg.eval.seeds,
                "score": sc,
                "slo_weight": slo_weight,
                "slo_target": slo_target,
                "baseline_score": self.baseline.score,
                "timesteps": int(steps),
                "policy": res,
                "baseline_results": self.baseline.results,
            }
            self.learner.save(
                self.out,
                evaluation,
                self.curve,
                default_slo_weight=slo_weight,
                default_slo_target=slo_target,
            )

    def _results(self, slo_weight: float) -> list[dict[str, Any]]:
        cfg = self.learner.cfg
        policy = self.learner.policy(slo_weight)
        runner = fixed_runner(policy, cfg.env.limits, rows_needed(policy.obs_spec))
        shield = (cfg.env.shield or ShieldConfig()) if cfg.eval.shielded else None
        return evaluate_policy(
            runner, self.learner.profile, self.workloads, cfg, cfg.eval.seeds, shield=shield
        )

    def _score(self, results: list[dict[str, Any]]) -> float:
        e = self.learner.cfg.eval
        return score(results, self.baseline.results, e.slo_weight, e.slo_penalty)

    def _curve_point(
        self,
        steps: int,
        wall_s: float,
        sc: float,
        slo_weight: float,
        res: list[dict[str, Any]],
        by_weight: dict[str, float],
    ) -> dict[str, Any]:
        base = self.baseline.results
        pairs = list(zip(res, base, strict=True))
        return {
            "timesteps": int(steps),
            "wall_s": round(wall_s, 1),
            "score": sc,
            "baseline_score": self.baseline.score,
            "slo_weight": slo_weight,
            "scores_by_slo_weight": by_weight,
            "beats_baseline_everywhere": all(
                r["cost_usd"] <= b["cost_usd"] and r["slo_attainment"] >= b["slo_attainment"] - 1e-4
                for r, b in pairs
            ),
            "cost_vs_baseline": float(np.mean([r["cost_usd"] / b["cost_usd"] for r, b in pairs])),
            "slo_attainment": float(np.mean([r["slo_attainment"] for r in res])),
            "baseline_slo_attainment": float(np.mean([b["slo_attainment"] for b in base])),
        }


def learn(
    model: PPO, evaluator: Evaluator, cfg: TrainConfig, *, resumed: bool, progress_bar: bool
) -> None:
    """PPO up to `total_timesteps`, handing control to the evaluator every `eval.every_steps`."""
    from rlscale.training.ppo import EvaluateEvery

    done_steps = int(model.num_timesteps)
    remaining = max(cfg.total_timesteps - done_steps, 0)
    if remaining > 0:
        every = EvaluateEvery(
            evaluator.evaluate,
            every_steps=cfg.eval.every_steps,
            first_at=done_steps + cfg.eval.every_steps,
        )
        model.learn(
            total_timesteps=remaining,
            callback=every,
            progress_bar=progress_bar,
            tb_log_name=cfg.name,
            reset_num_timesteps=not resumed,
        )


def train(
    cfg: TrainConfig,
    *,
    resume: str | Path | None = None,
    progress_bar: bool = True,
    verbose: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """Train, evaluate periodically against the baseline, write the best checkpoint; returns its folder."""
    set_seeds(cfg.seed, cfg.torch_threads)
    profile = load_profile(cfg.profile)
    # training copies (randomised from the seed), held-out evaluation windows (fixed)
    train_w = build_workloads(
        cfg.workloads,
        profile,
        cfg.env.interval_s,
        np.random.default_rng(cfg.seed),
        cfg.augmentation,
    )
    eval_w = build_workloads(
        cfg.eval.workloads, profile, cfg.env.interval_s, np.random.default_rng(cfg.seed + 1)
    )
    env = make_env(cfg, profile, train_w)
    model = make_model(cfg, env, verbose)
    curve: list[dict[str, Any]] = []
    if resume is not None:
        curve = resume_from(model, env, Path(resume))
        log(f"[train] resumed from {resume} at {model.num_timesteps} steps")
    learner = Learner(cfg, profile, model, env, workload_hashes(cfg))
    out = cfg.out_dir()
    evaluator = Evaluator(learner, eval_w, evaluate_baseline(cfg, profile, eval_w), out, curve, log)

    if resume is None and cfg.eval.at_start:
        evaluator.evaluate(0)
    learn(model, evaluator, cfg, resumed=resume is not None, progress_bar=progress_bar)
    if not evaluator.curve or evaluator.curve[-1]["timesteps"] != int(model.num_timesteps):
        evaluator.evaluate(int(model.num_timesteps))
    write_final_checkpoint(learner, evaluator, out)
    env.close()
    return out


def write_final_checkpoint(learner: Learner, evaluator: Evaluator, out: Path) -> None:
    """With evaluation windows the best checkpoint is already there: only its curve is brought up
    to date; without them the final model is the checkpoint."""
    from rlscale.policies.checkpoint import update_checkpoint

    if not evaluator.workloads:
        learner.save(
            out,
            {"note": "no eval workloads configured"},
            evaluator.curve,
            default_slo_weight=learner.cfg.env.reward.slo,
        )
    else:
        update_checkpoint(out, files={"training_curve.json": _curve_json(evaluator.curve)})


def _curve_json(curve: list[dict[str, Any]]) -> str:
    return json.dumps(curve, indent=1) + "\n"


def _profile_hash(name: str) -> str | None:
    p = Path(name)
    if not p.exists():
        p = REPO_ROOT / "rlscale" / "profiles" / f"{name}.yaml"
    return sha256_file(p) if p.exists() else None


def resume_from(model: PPO, env: VecNormalize, folder: Path) -> list[dict[str, Any]]:
    """Restore policy (actor, critic, log_std), normalisation statistics and step count from a
    checkpoint folder; returns its training curve."""
    from safetensors.torch import load_file

    from rlscale.policies.checkpoint import verify_checkpoint
    from rlscale.training.ppo import restore_full_state

    manifest = verify_checkpoint(folder)
    st = folder / "train_state.safetensors"
    if not st.exists():
        raise InputError(st, "missing: this checkpoint cannot be resumed")
    norm = json.loads((folder / "obs_norm.json").read_text())
    restore_full_state(model, env, load_file(str(st)), norm, manifest.get("train_state", {}))
    multipliers = cast("LLMAutoscaleVecEnv", env.venv).core.multipliers
    if multipliers is not None and "slo_multipliers" in manifest:
        try:
            multipliers.load(manifest["slo_multipliers"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(folder / "manifest.json", str(e), field="slo_multipliers") from e
    curve_f = folder / "training_curve.json"
    curve: list[dict[str, Any]] = json.loads(curve_f.read_text()) if curve_f.exists() else []
    return curve
