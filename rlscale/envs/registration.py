"""Registers `rlscale/LLMAutoscale-v0` with Gymnasium (imported by rlscale.envs)."""

from gymnasium.envs.registration import register, registry

ENV_ID = "rlscale/LLMAutoscale-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="rlscale.envs.gym_env:LLMAutoscaleEnv")
