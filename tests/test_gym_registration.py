"""Gymnasium's conventions: `import rlscale.envs` registers the env id, `module:env_id` works in a
fresh interpreter, and `import rlscale` alone (what the live controller does) loads no Gymnasium."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _fresh_python(code: str) -> str:
    """Run `code` in a new interpreter (this one's registry is already filled) from the repo root."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


MAKE_AND_STEP = """
obs, _ = env.reset(seed=0)
assert env.observation_space.contains(obs)
env.step(env.action_space.sample())
print(type(env.unwrapped).__name__)
"""


def test_import_rlscale_loads_no_gymnasium():
    assert _fresh_python("import sys, rlscale; print('gymnasium' in sys.modules)") == "False"


def test_importing_rlscale_envs_registers_the_env_id():
    code = (
        "import gymnasium, rlscale.envs\nenv = gymnasium.make('rlscale/LLMAutoscale-v0')"
        + MAKE_AND_STEP
    )
    assert _fresh_python(code) == "LLMAutoscaleEnv"


def test_the_module_colon_env_id_form_needs_no_import():
    code = (
        "import gymnasium\nenv = gymnasium.make('rlscale.envs:rlscale/LLMAutoscale-v0')"
        + MAKE_AND_STEP
    )
    assert _fresh_python(code) == "LLMAutoscaleEnv"
