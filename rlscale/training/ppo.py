"""The bridge between a stable-baselines3 PPO model and the served `PPOPolicy`.

SB3's `ActorCriticPolicy` with a Box action keeps the actor as `mlp_extractor.policy_net`
(Linear/activation pairs) followed by `action_net` (the Gaussian's mean); the deterministic
action is that mean. We copy those tensors under `build_actor`'s keys, so the served policy is
plain numpy layers (`PPOPolicy`) and the checkpoint needs nothing from SB3 (or torch) to load.

Also here, as the other half of the bridge: the full training state for resuming (`full_state` /
`restore_full_state`) and the callback that hands `learn` over to the evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.running_mean_std import RunningMeanStd

from rlscale.contract import ActionSpec, ObservationSpec
from rlscale.policies.checkpoint import ObsNorm, PPOPolicy, layers_from_state
from rlscale.safety import SafetyLimits

if TYPE_CHECKING:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize


def actor_state(model: PPO) -> dict[str, torch.Tensor]:
    """The actor's tensors under `build_actor` keys: 0, 2, ... then the mean layer."""
    pol = model.policy
    out: dict[str, torch.Tensor] = {}
    linear = [m for m in pol.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    action_net = pol.action_net
    if not isinstance(action_net, torch.nn.Linear):
        raise TypeError(
            f"expected a Linear action_net (a Box action space), got {type(action_net).__name__}"
        )
    for i, layer in enumerate([*linear, action_net]):
        out[f"{2 * i}.weight"] = layer.weight.detach().cpu().clone()
        out[f"{2 * i}.bias"] = layer.bias.detach().cpu().clone()
    return out


def obs_size(model: PPO) -> int:
    """Length of the (Box) observation the model reads."""
    shape = model.observation_space.shape
    if shape is None:
        raise TypeError("expected a Box observation space with a shape")
    return int(shape[0])


def _obs_rms(vecnorm: VecNormalize) -> RunningMeanStd:
    rms = vecnorm.obs_rms
    if not isinstance(rms, RunningMeanStd):
        raise TypeError(
            "expected one observation normaliser (a Box observation space), got one per Dict key"
        )
    return rms


def obs_norm_of(vecnorm: VecNormalize | None, obs_size: int) -> ObsNorm:
    if vecnorm is None or not vecnorm.norm_obs:
        return ObsNorm.identity(obs_size)
    rms = _obs_rms(vecnorm)
    return ObsNorm(
        np.array(rms.mean, dtype=np.float64),
        np.array(rms.var, dtype=np.float64),
        float(vecnorm.epsilon),
        float(vecnorm.clip_obs),
    )


def policy_from_model(
    model: PPO,
    vecnorm: VecNormalize | None,
    obs_spec: ObservationSpec,
    act_spec: ActionSpec,
    *,
    hidden: list[int],
    activation: str,
    limits: SafetyLimits,
    knob: bool,
    slo_weight: float | None = None,
    name: str = "ppo",
) -> PPOPolicy:
    """The served policy of the model as it is now (what a checkpoint of it would load as)."""
    return PPOPolicy(
        layers_from_state(actor_state(model), len(hidden)),
        activation,
        obs_norm_of(vecnorm, obs_size(model)),
        obs_spec,
        act_spec,
        limits=limits,
        knob=knob,
        slo_weight=slo_weight if knob else None,
        name=name,
    )


def full_state(
    model: PPO, vecnorm: VecNormalize | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything to resume training without pickles: the whole policy state dict (actor, critic,
    log_std) as tensors, and the return-normalisation statistics as JSON."""
    tensors = {
        k: v.detach().cpu().clone().contiguous() for k, v in model.policy.state_dict().items()
    }
    extra: dict[str, Any] = {"num_timesteps": int(model.num_timesteps)}
    if vecnorm is not None:
        extra["ret_rms"] = {
            "mean": float(np.asarray(vecnorm.ret_rms.mean)),
            "var": float(np.asarray(vecnorm.ret_rms.var)),
            "count": float(vecnorm.ret_rms.count),
        }
        extra["obs_rms_count"] = float(_obs_rms(vecnorm).count)
    return tensors, extra


def restore_full_state(
    model: PPO,
    vecnorm: VecNormalize,
    tensors: Mapping[str, torch.Tensor],
    obs_norm: Mapping[str, Any],
    train_state: Mapping[str, Any],
) -> None:
    """The inverse of `full_state` (with the checkpoint's `obs_norm.json`): policy, normalisation
    statistics and step count, so `learn` continues where the checkpoint stopped."""
    model.policy.load_state_dict(dict(tensors))
    rms = _obs_rms(vecnorm)
    rms.mean = np.asarray(obs_norm["mean"], dtype=np.float64)
    rms.var = np.asarray(obs_norm["var"], dtype=np.float64)
    rms.count = float(train_state.get("obs_rms_count", 1e4))
    if "ret_rms" in train_state:
        ret = train_state["ret_rms"]
        vecnorm.ret_rms.mean = np.asarray(ret["mean"], dtype=np.float64)
        vecnorm.ret_rms.var = np.asarray(ret["var"], dtype=np.float64)
        vecnorm.ret_rms.count = float(ret["count"])
    model.num_timesteps = int(train_state.get("num_timesteps", 0))


class EvaluateEvery(BaseCallback):
    """Calls `evaluate(num_timesteps, logger)` once `first_at` steps are reached, then every
    `every_steps` (a vectorised step advances B timesteps, so evaluations land on the first step
    at or past each mark)."""

    def __init__(
        self, evaluate: Callable[[int, Any], None], *, every_steps: int, first_at: int
    ) -> None:
        super().__init__()
        self.evaluate = evaluate
        self.every_steps = every_steps
        self.next_eval = first_at

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.every_steps
            self.evaluate(self.num_timesteps, self.logger)
        return True


def build_actor(
    obs_size: int, hidden: Sequence[int], activation: str, action_size: int = 2
) -> torch.nn.Sequential:
    """Linear/activation pairs then the action-mean layer; keys 0, 2, ... as SB3 lays out
    `mlp_extractor.policy_net` followed by `action_net`. Training and tests only: serving runs the
    same layers in numpy (`PPOPolicy`)."""
    nn = torch.nn
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    last = obs_size
    for h in hidden:
        layers += [nn.Linear(last, int(h)), act()]
        last = int(h)
    layers.append(nn.Linear(last, action_size))
    return nn.Sequential(*layers)
