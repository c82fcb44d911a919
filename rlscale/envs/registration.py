"""Registers `rlscale/LLMAutoscale-v0` with Gymnasium; `rlscale/envs/__init__.py` imports it.

So either of these makes the environment (the second is Gymnasium's `module:env_id` form, which
imports the module first):

    import gymnasium, rlscale.envs
    env = gymnasium.make("rlscale/LLMAutoscale-v0")
    env = gymnasium.make("rlscale.envs:rlscale/LLMAutoscale-v0")

The entry point is a string, so registering loads neither torch nor the environment's module.
"""

from gymnasium.envs.registration import register, registry

ENV_ID = "rlscale/LLMAutoscale-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="rlscale.envs.gym_env:LLMAutoscaleEnv")
