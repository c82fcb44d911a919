"""The bridge between a stable-baselines3 PPO model and the served `PPOPolicy`.

SB3's `ActorCriticPolicy` with a Box action keeps the actor as `mlp_extractor.policy_net`
(Linear/activation pairs) followed by `action_net` (the Gaussian's mean); the deterministic
action is that mean. We copy those tensors under `build_actor`'s keys, so the served policy is
plain numpy layers (`PPOPolicy`) and the checkpoint needs nothing from SB3 (or torch) to load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

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
    for i, layer in enumerate(linear):
        out[f"{2 * i}.weight"] = layer.weight.detach().cpu().clone()
        out[f"{2 * i}.bias"] = layer.bias.detach().cpu().clone()
    k = 2 * len(linear)
    out[f"{k}.weight"] = pol.action_net.weight.detach().cpu().clone()
    out[f"{k}.bias"] = pol.action_net.bias.detach().cpu().clone()
    return out


def obs_norm_of(vecnorm: VecNormalize | None, obs_size: int) -> ObsNorm:
    if vecnorm is None or not vecnorm.norm_obs:
        return ObsNorm.identity(obs_size)
    rms = vecnorm.obs_rms
    return ObsNorm(np.array(rms.mean, dtype=np.float64), np.array(rms.var, dtype=np.float64),
                   float(vecnorm.epsilon), float(vecnorm.clip_obs))


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
    obs_size = int(model.observation_space.shape[0])
    return PPOPolicy(layers_from_state(actor_state(model), len(hidden)), activation, obs_norm_of(vecnorm, obs_size),
                     obs_spec, act_spec, limits=limits, knob=knob, slo_weight=slo_weight if knob else None, name=name)


def full_state(model: PPO, vecnorm: VecNormalize | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything to resume training without pickles: the whole policy state dict (actor, critic,
    log_std) as tensors, and the return-normalisation statistics as JSON."""
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.policy.state_dict().items()}
    extra: dict[str, Any] = {"num_timesteps": int(model.num_timesteps)}
    if vecnorm is not None:
        extra["ret_rms"] = {"mean": float(np.asarray(vecnorm.ret_rms.mean)), "var": float(np.asarray(vecnorm.ret_rms.var)),
                            "count": float(vecnorm.ret_rms.count)}
        extra["obs_rms_count"] = float(vecnorm.obs_rms.count)
    return tensors, extra
