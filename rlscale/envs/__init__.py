"""Simulation core (numpy only, `cluster`) and the Gymnasium / SB3 environments built on it.

Importing this package registers `rlscale/LLMAutoscale-v0` with Gymnasium (`registration`; the
environment class itself loads on the first `gymnasium.make`). `import rlscale` alone does not:
the live controller imports rlscale and must never import Gymnasium.
"""

from rlscale.envs import registration as _registration  # noqa: F401  (registers the env id)
