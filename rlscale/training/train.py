"""`rlscale train`: PPO (stable-baselines3) on the batched simulator, described by one YAML config.

The run, top to bottom (`train`):

1. config: `TrainConfig.load(path, overrides)` — YAML validated by pydantic, every field
   overridable with `--set ppo.learning_rate=1e-4`; the resolved config goes into the checkpoint;
2. seeding: one block (python, numpy, torch, SB3, the env's generator);
3. workloads: each trace is loaded at the control interval, sliced to its training window and
   rate-scaled to `copies` fleet sizes drawn from `peak_replicas` (domain randomisation, together
   with `augmentation` noise/bursts and the env's cold-start and latency jitter);
4. env: `LLMAutoscaleVecEnv` (B clusters in numpy) under SB3's `VecNormalize`;
5. model: SB3 `PPO` with SB3's hyperparameter names; TensorBoard logs under `tensorboard_log`;
6. `EvalVsRule` callback: every `eval.every_steps`, roll the current policy and the baseline rule
   out on held-out windows (`rlscale.evaluation.rollout`, the evaluator's own harness) and keep
   the best checkpoint; the curve (score vs steps and wall time) is written beside it;
7. `learn`, then the final checkpoint (`checkpoints/<name>/`, see rlscale.policies.checkpoint).

Score (higher is better), per eval workload then averaged: with `eval.slo_penalty: shortfall`
(the default) -(cost / baseline cost + eval_slo_weight x max(0, baseline SLO - SLO)), the shape of
issue #6's requirement (cheaper than the baseline at an SLO attainment no lower than its), so
the baseline scores -1 and attainment above the baseline's earns nothing; with `miss`,
-(cost / baseline cost + eval_slo_weight x (1 - SLO)), which also rewards attainment above it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlscale.contract import FIELD_INDEX, IntervalMetrics, ObservationSpec
from rlscale.envs.core import EnvConfig
from rlscale.errors import InputError
from rlscale.policies.base import Decision
from rlscale.profiles.model import ServiceProfile, load_profile
from rlscale.traces.workload import Workload

_F = FIELD_INDEX
REPO_ROOT = Path(__file__).resolve().parents[2]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkloadSpec(_Strict):
    """One trace and how it is cut and scaled. `slice_h` = [start, end) hours from the trace's
    start; `peak_replicas` = the range of fleet sizes (replicas the p99 minute needs) the trace is
    scaled to; `copies` = how many scaled copies are drawn from that range."""

    path: str
    format: str | None = None
    name: str | None = None
    slice_h: tuple[float, float] | None = None
    peak_replicas: tuple[float, float] = (4.0, 16.0)
    copies: int = Field(default=1, ge=1, le=64)
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self) -> WorkloadSpec:
        lo, hi = self.peak_replicas
        if not (0 < lo <= hi):
            raise ValueError(f"peak_replicas = {list(self.peak_replicas)}, expected 0 < low <= high")
        if self.slice_h is not None and not (0 <= self.slice_h[0] < self.slice_h[1]):
            raise ValueError(f"slice_h = {list(self.slice_h)}, expected 0 <= start < end")
        return self


class Augmentation(_Strict):
    noise_cv: float = Field(default=0.0, ge=0, le=2)
    bursts_per_day: float = Field(default=0.0, ge=0, le=200)
    burst_magnitude: tuple[float, float] = (1.5, 3.0)


class PPOParams(_Strict):
    """SB3 PPO's hyperparameters, spelled as SB3 spells them (net_arch/activation go to policy_kwargs)."""

    learning_rate: float = Field(default=3e-4, gt=0, le=1)
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
    # "tuned", "hpa", "threshold" (rlscale.policies.registry, each under its own limits), or
    # "rule:U" = target utilisation U of demand (arrivals + queue / 60 s) under the training limits.
    baseline: str = "tuned"
    slo_weight: float = Field(default=20.0, ge=0)  # score penalty per unit of SLO miss (or shortfall)
    slo_penalty: Literal["shortfall", "miss"] = "shortfall"
    # cost/SLO knob settings tried at every evaluation besides `env.reward.slo`; the best-scoring
    # (step, setting) pair is kept and its setting becomes the checkpoint's default knob
    slo_weights: list[float] = []
    # also evaluate the untrained policy (step 0), so the curve shows what training added
    at_start: bool = True


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
        p = Path(path)
        if not p.exists():
            raise InputError(p, "config not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(p, f"not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise InputError(p, "expected a mapping at the top level")
        for o in overrides:
            apply_override(raw, o, p)
        return cls.from_dict(raw, p)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str | Path = "config") -> TrainConfig:
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise InputError(where, f"{err['msg']} (got {err.get('input')!r})", field=loc) from None

    def out_dir(self) -> Path:
        return Path(self.out.format(name=self.name))


def apply_override(raw: dict[str, Any], override: str, where: str | Path = "--set") -> None:
    """`a.b.c=value` (value parsed as YAML: numbers, lists, null) into the nested dict."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise InputError(where, f"override {override!r}: expected key.path=value", field="--set")
    node: Any = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise InputError(where, f"override {override!r}: {part} is not a section", field="--set")
    last = parts[-1]
    parsed = yaml.safe_load(value)
    if isinstance(node, list):
        node[int(last)] = parsed
    else:
        node[last] = parsed


def resolve_path(path: str) -> Path:
    """A trace path as given, else relative to the repository root (configs say ../shared/data)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    q = REPO_ROOT / path
    return q if q.exists() else p


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_workloads(
    specs: Sequence[WorkloadSpec], profile: ServiceProfile, interval_s: float, rng: np.random.Generator,
    aug: Augmentation | None = None,
) -> list[Workload]:
    """Load, slice, scale (and augment) every spec into its copies."""
    from rlscale.traces.loaders import load_workload
    from rlscale.traces.transforms import augment, scale_to_fleet, slice_window

    out: list[Workload] = []
    cap = profile.capacity_rps()
    for spec in specs:
        path = resolve_path(spec.path)
        base = load_workload(path, spec.format, interval_s=interval_s, seed=spec.seed, name=spec.name)
        if spec.slice_h is not None:
            base = slice_window(base, spec.slice_h[0] * 3600.0, spec.slice_h[1] * 3600.0)
        lo, hi = spec.peak_replicas
        for k in range(spec.copies):
            peak = lo if spec.copies == 1 and lo == hi else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            w = scale_to_fleet(base, peak, cap)
            if aug is not None and (aug.noise_cv > 0 or aug.bursts_per_day > 0):
                w = augment(w, rng, noise_cv=aug.noise_cv, bursts_per_day=aug.bursts_per_day,
                            burst_magnitude=aug.burst_magnitude)
            out.append(w.with_(name=f"{base.name}@{peak:.1f}" + (f"#{k}" if spec.copies > 1 else "")))
    return out


class TargetUtilisationRule:
    """replicas = ceil((arrivals + queue / drain_s) / (capacity x u)): the rule the action space
    holds constant, i.e. a target-tracking autoscaler tuned to utilisation u."""

    def __init__(self, u: float, spec: ObservationSpec, drain_s: float = 60.0) -> None:
        self.u, self.spec, self.drain_s = u, spec, drain_s
        self.name = f"rule:{u:g}"

    def reset(self) -> None:
        pass

    def decide(self, window: Sequence[IntervalMetrics]) -> Decision:
        m = window[-1]
        demand = np.nan_to_num(m.arrival_rps) + np.nan_to_num(m.requests_waiting) / self.drain_s
        r = max(0, math.ceil(demand / (self.spec.replica_capacity_rps * self.u) - 1e-9))
        return Decision(r, f"{self.name}: demand {demand:.1f} rps")


def baseline_runner(name: str, profile: ServiceProfile, cfg: TrainConfig) -> tuple[str, Callable[[Workload], tuple[Any, Any]]]:
    """(resolved name, workload -> (factory(seed) -> Policy, limits to clamp it by)).

    "rule:U" is `TargetUtilisationRule` under the training limits; any other name is resolved by
    `rlscale.policies.registry.make_policy` (tuned, hpa, threshold, ...) with its own limits, as
    `rlscale evaluate` runs it. An unavailable baseline falls back to rule:0.7, loudly."""
    spec = cfg.env.observation_spec(profile)
    if not name.startswith("rule:"):
        try:
            from rlscale.policies.registry import make_policy

            sim_cfg = _eval_sim_config(cfg)

            def via_registry(w: Workload) -> tuple[Any, Any]:
                f = make_policy(name, profile=profile, workload=w, config=sim_cfg)
                return f, f.limits

            return name, via_registry
        except Exception as e:  # noqa: BLE001 - the run goes on against the rule, and says so
            print(f"[train] baseline {name!r} unavailable ({type(e).__name__}: {e}); using rule:0.7")
            name = "rule:0.7"
    u = float(name.split(":", 1)[1])
    return name, lambda w: ((lambda seed: TargetUtilisationRule(u, spec)), cfg.env.limits)


def summarise(rollouts: list[Any]) -> tuple[float, float]:
    cost = float(np.mean([s.cost_usd for r in rollouts for s in r.summaries]))
    slo = float(np.mean([s.slo_attainment for r in rollouts for s in r.summaries]))
    return cost, slo


def _eval_sim_config(cfg: TrainConfig) -> Any:
    from dataclasses import replace

    return replace(cfg.env.sim_config(), latency_jitter=0.0, cold_start_jitter=0.0)


def evaluate_policy(
    runner: Callable[[Workload], tuple[Any, Any]], profile: ServiceProfile, workloads: Sequence[Workload],
    cfg: TrainConfig, seeds: Sequence[int],
) -> list[dict[str, float]]:
    """Per workload: mean cost and SLO attainment over seeds, each policy under its own limits."""
    from rlscale.evaluation.rollout import rollout

    sim_cfg = _eval_sim_config(cfg)
    out = []
    for w in workloads:
        make, limits = runner(w)
        r = rollout(make, profile, w, seeds=seeds, limits=limits, config=sim_cfg)
        cost, slo = summarise([r])
        out.append({"workload": w.name, "cost_usd": cost, "slo_attainment": slo})
    return out


def score(
    results: Sequence[dict[str, Any]], ref: Sequence[dict[str, Any]], slo_weight: float,
    penalty: Literal["shortfall", "miss"] = "shortfall",
) -> float:
    """Mean over workloads of -(cost / reference cost + slo_weight x SLO penalty); see the module
    docstring. `results` and `ref` are per-workload rows in the same order."""
    def slo_term(r: dict[str, Any], b: dict[str, Any]) -> float:
        if penalty == "shortfall":
            return max(0.0, b["slo_attainment"] - r["slo_attainment"])
        return 1.0 - r["slo_attainment"]

    return -float(np.mean([
        r["cost_usd"] / max(b["cost_usd"], 1e-9) + slo_weight * slo_term(r, b)
        for r, b in zip(results, ref, strict=True)
    ]))


def set_seeds(seed: int, threads: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def train(
    cfg: TrainConfig, *, resume: str | Path | None = None, progress_bar: bool = True, verbose: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """Train, evaluate periodically against the baseline, write the best checkpoint; returns its folder."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecNormalize

    from rlscale.envs.vec_env import LLMAutoscaleVecEnv
    from rlscale.policies.checkpoint import (
        read_manifest,
        save_checkpoint,
        update_checkpoint,
        verify_checkpoint,
    )
    from rlscale.training.ppo import actor_state, full_state, obs_norm_of, policy_from_model

    # seeding: one block
    set_seeds(cfg.seed, cfg.torch_threads)
    set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # workloads: training copies (randomised), held-out evaluation windows (fixed)
    profile = load_profile(cfg.profile)
    interval_s = cfg.env.interval_s
    train_w = build_workloads(cfg.workloads, profile, interval_s, rng, cfg.augmentation)
    eval_w = build_workloads(cfg.eval.workloads, profile, interval_s, np.random.default_rng(cfg.seed + 1))
    obs_spec = cfg.env.observation_spec(profile)
    act_spec = cfg.env.action_spec()
    knob = cfg.env.slo_weight_range is not None
    hidden, activation = list(cfg.ppo.net_arch), cfg.ppo.activation

    # env
    venv = LLMAutoscaleVecEnv(profile, train_w, cfg.n_envs, cfg.env, seed=cfg.seed)
    env = VecNormalize(venv, norm_obs=True, norm_reward=cfg.normalize.norm_reward,
                       clip_obs=cfg.normalize.clip_obs, gamma=cfg.ppo.gamma)

    # model
    p = cfg.ppo
    act_fn = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]
    model = PPO(
        "MlpPolicy", env, learning_rate=p.learning_rate, n_steps=p.n_steps, batch_size=p.batch_size,
        n_epochs=p.n_epochs, gamma=p.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_range,
        ent_coef=p.ent_coef, vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm, target_kl=p.target_kl,
        policy_kwargs={"net_arch": {"pi": hidden, "vf": hidden}, "activation_fn": act_fn, "log_std_init": p.log_std_init},
        tensorboard_log=cfg.tensorboard_log, seed=cfg.seed, verbose=verbose, device="cpu",
    )
    out = cfg.out_dir()
    done_steps = 0
    curve: list[dict[str, Any]] = []
    if resume is not None:
        done_steps, curve = _resume(model, env, Path(resume), verify_checkpoint, read_manifest)
        log(f"[train] resumed from {resume} at {done_steps} steps")

    workload_hashes = {}
    for spec in [*cfg.workloads, *cfg.eval.workloads]:
        rp = resolve_path(spec.path)
        workload_hashes[spec.path] = sha256_of(rp) if rp.exists() else None

    base_name, base_runner = baseline_runner(cfg.eval.baseline, profile, cfg)
    base_results = evaluate_policy(base_runner, profile, eval_w, cfg, cfg.eval.seeds) if eval_w else []
    base_score = score(base_results, base_results, cfg.eval.slo_weight, cfg.eval.slo_penalty) if eval_w else float("nan")
    default_w = cfg.env.reward.slo
    t0 = time.perf_counter()
    wall_before = curve[-1]["wall_s"] if curve else 0.0

    knob_settings = list(dict.fromkeys([default_w, *(cfg.eval.slo_weights if knob else [])]))

    def current_policy(slo_weight: float) -> Any:
        return policy_from_model(model, env, obs_spec, act_spec, hidden=hidden, activation=activation,
                                 limits=cfg.env.limits, knob=knob, slo_weight=slo_weight)

    def write(folder: Path, evaluation: dict[str, Any], default_w: float = default_w) -> None:
        tensors, state_extra = full_state(model, env)
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / "train_state.safetensors"))
        save_checkpoint(
            folder, actor_state=actor_state(model), hidden=hidden, activation=activation,
            obs_norm=obs_norm_of(env, int(model.observation_space.shape[0])), obs_spec=obs_spec,
            act_spec=act_spec, limits=cfg.env.limits, knob=knob,
            extra={
                "name": cfg.name,
                "profile": {"name": profile.name, "sha256": _profile_hash(cfg.profile)},
                "slo": {"ttft_slo_s": cfg.env.ttft_slo_s, "tpot_slo_s": cfg.env.tpot_slo_s},
                "reward": cfg.env.reward.model_dump(),
                "default_slo_weight": default_w,
                "slo_weight_range": list(cfg.env.slo_weight_range) if knob else None,
                "training_config": cfg.model_dump(mode="json"),
                "workloads": workload_hashes,
                "train_state": {**state_extra, "file": "train_state.safetensors"},
                "evaluation": evaluation,
            },
            extra_files={"training_curve.json": json.dumps(curve, indent=1) + "\n",
                         "train_state.safetensors": None},  # type: ignore[dict-item]
        )

    best = {"score": -math.inf}

    class EvalVsRule(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = done_steps + cfg.eval.every_steps

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval:
                self.next_eval += cfg.eval.every_steps
                run_eval(self.num_timesteps, self.logger)
            return True

    def run_eval(steps: int, logger: Any | None) -> None:
        if not eval_w:
            return
        tried = []
        for w_knob in knob_settings:
            pol = current_policy(w_knob)
            res_w = evaluate_policy(lambda w, pol=pol: ((lambda seed: pol), cfg.env.limits), profile, eval_w, cfg, cfg.eval.seeds)
            tried.append((score(res_w, base_results, cfg.eval.slo_weight, cfg.eval.slo_penalty), w_knob, res_w))
        sc, knob_w, res = max(tried, key=lambda t: t[0])
        beats = all(r["cost_usd"] <= b["cost_usd"] and r["slo_attainment"] >= b["slo_attainment"] - 1e-4
                    for r, b in zip(res, base_results, strict=True))
        wall = wall_before + time.perf_counter() - t0
        point = {"timesteps": int(steps), "wall_s": round(wall, 1), "score": sc, "baseline_score": base_score,
                 "slo_weight": knob_w, "scores_by_slo_weight": {str(t[1]): t[0] for t in tried},
                 "beats_baseline_everywhere": beats,
                 "cost_vs_baseline": float(np.mean([r["cost_usd"] / b["cost_usd"] for r, b in zip(res, base_results, strict=True)])),
                 "slo_attainment": float(np.mean([r["slo_attainment"] for r in res])),
                 "baseline_slo_attainment": float(np.mean([b["slo_attainment"] for b in base_results]))}
        curve.append(point)
        if logger is not None:
            for k in ("score", "baseline_score", "cost_vs_baseline", "slo_attainment"):
                logger.record(f"eval/{k}", point[k])
        log(f"[train] {steps} steps, {wall:.0f} s: score {sc:.3f} at knob {knob_w:g} (baseline {base_score:.3f}), "
            f"cost x{point['cost_vs_baseline']:.3f}, SLO {point['slo_attainment']:.4f} "
            f"(baseline {point['baseline_slo_attainment']:.4f})")
        if sc > best["score"]:
            best["score"] = sc
            write(out, {"baseline": base_name, "seeds": cfg.eval.seeds, "score": sc, "slo_weight": knob_w,
                        "baseline_score": base_score, "timesteps": int(steps), "policy": res,
                        "baseline_results": base_results}, default_w=knob_w)

    if resume is None and cfg.eval.at_start:
        run_eval(0, None)
    remaining = max(cfg.total_timesteps - done_steps, 0)
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=EvalVsRule(), progress_bar=progress_bar,
                    tb_log_name=cfg.name, reset_num_timesteps=resume is None)
    if not curve or curve[-1]["timesteps"] != int(model.num_timesteps):
        run_eval(int(model.num_timesteps), None)
    if not eval_w:
        write(out, {"note": "no eval workloads configured"})
    else:
        update_checkpoint(out, files={"training_curve.json": json.dumps(curve, indent=1) + "\n"})
    env.close()
    return out


def _profile_hash(name: str) -> str | None:
    p = Path(name)
    if not p.exists():
        p = REPO_ROOT / "rlscale" / "profiles" / f"{name}.yaml"
    return sha256_of(p) if p.exists() else None


def _resume(model: Any, env: Any, folder: Path, verify: Callable, read: Callable) -> tuple[int, list]:
    """Restore policy (actor, critic, log_std), normalisation statistics and step count."""
    from safetensors.torch import load_file

    m = verify(folder)
    st = folder / "train_state.safetensors"
    if not st.exists():
        raise InputError(st, "missing: this checkpoint cannot be resumed")
    model.policy.load_state_dict(load_file(str(st)))
    norm = json.loads((folder / "obs_norm.json").read_text())
    env.obs_rms.mean = np.asarray(norm["mean"], dtype=np.float64)
    env.obs_rms.var = np.asarray(norm["var"], dtype=np.float64)
    ts = m.get("train_state", {})
    env.obs_rms.count = float(ts.get("obs_rms_count", 1e4))
    if "ret_rms" in ts:
        env.ret_rms.mean = np.float64(ts["ret_rms"]["mean"])
        env.ret_rms.var = np.float64(ts["ret_rms"]["var"])
        env.ret_rms.count = float(ts["ret_rms"]["count"])
    steps = int(ts.get("num_timesteps", 0))
    model.num_timesteps = steps
    curve_f = folder / "training_curve.json"
    curve = json.loads(curve_f.read_text()) if curve_f.exists() else []
    return steps, curve
