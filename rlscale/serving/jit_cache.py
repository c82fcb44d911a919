"""Keep numba's on-disk cache honest across modules.

numba keys a cached kernel on its own source file only: the functions it calls from other
modules are compiled into it, and the module-level constants it reads are frozen into it, yet a
change to either leaves the cache valid in numba's eyes (numba issue #1833; the limitation is in
numba's caching docs). A kernel module that reads another module's code or constants therefore
calls `drop_stale(__file__, *their files)` before its kernels first run: any cache entry older
than one of those files is removed, so the kernel recompiles instead of silently running the old
code (the failure seen while the SLO classes changed `serve_kernel` under `cluster_kernel`).
"""

from __future__ import annotations

from pathlib import Path


def drop_stale(module_file: str, *depends_on: str) -> int:
    """Remove all of `module_file`'s numba cache files (`__pycache__/<stem>.*.nbi|nbc`) when any
    is older than one of `depends_on` (all, not only the old ones: an index may point at an old
    entry); returns how many were removed. An unreadable or read-only install removes nothing
    (numba then caches in its user-wide directory, which this cannot see)."""
    here = Path(module_file)
    try:
        newest = max(Path(p).stat().st_mtime for p in depends_on) if depends_on else 0.0
        files = list((here.parent / "__pycache__").glob(f"{here.stem}.*.nb[ic]"))
        if not any(f.stat().st_mtime < newest for f in files):
            return 0
        for f in files:
            f.unlink(missing_ok=True)
        return len(files)
    except OSError:
        return 0
