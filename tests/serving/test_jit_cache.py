"""`serving.jit_cache.drop_stale`: a cached kernel whose callee changed in another module
recompiles instead of running the old code (numba's own cache does not notice, numba#1833)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlscale.serving.jit_cache import drop_stale

CALLEE = "from numba import njit\n\n@njit(cache=True)\ndef step():\n    return {value}\n"
CALLER = """import sys
{guard}from numba import njit
import callee

@njit(cache=True)
def run():
    return callee.step() * 10

print(run())
"""
GUARD = "from rlscale.serving.jit_cache import drop_stale\ndrop_stale(__file__, callee.__file__)\n"


def _run(tmp: Path, caller: str, callee_value: int) -> int:
    (tmp / "callee.py").write_text(CALLEE.format(value=callee_value))
    # a later mtime than any cache written by the previous run (coarse filesystem clocks)
    later = time.time() + 2.0
    os.utime(tmp / "callee.py", (later, later))
    out = subprocess.run(
        [sys.executable, str(tmp / caller)],
        cwd=tmp,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), *sys.path])},
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("guarded", [False, True])
def test_a_kernel_sees_its_callee_change_only_with_the_guard(tmp_path: Path, guarded: bool) -> None:
    pytest.importorskip("numba")
    # the guard must run after `import callee`: put it below the import
    src = CALLER.format(guard="import callee\n" + GUARD if guarded else "")
    (tmp_path / "caller.py").write_text(src)
    assert _run(tmp_path, "caller.py", 1) == 10
    second = _run(tmp_path, "caller.py", 2)
    # numba alone serves the cached caller with the old callee compiled in (the bug); the
    # guard drops that cache
    assert second == (20 if guarded else 10)


def test_only_a_module_with_a_newer_dependency_loses_its_cache(tmp_path: Path) -> None:
    mod, dep = tmp_path / "kern.py", tmp_path / "dep.py"
    mod.write_text("")
    dep.write_text("")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    files = [cache / "kern.f-1.py311.nbi", cache / "kern.f-1.py311.1.nbc"]
    other = cache / "other.f-1.py311.nbi"
    for f in [*files, other]:
        f.write_text("x")
    old, new = time.time() - 100, time.time()
    os.utime(dep, (old, old))
    assert drop_stale(str(mod), str(dep)) == 0 and all(f.exists() for f in files)
    os.utime(dep, (new + 10, new + 10))
    assert drop_stale(str(mod), str(dep)) == 2
    assert not any(f.exists() for f in files) and other.exists()
    assert drop_stale(str(tmp_path / "missing.py"), str(tmp_path / "nope.py")) == 0
