"""ServeGen (Alibaba Model Studio) rate traces: per-client 10-minute statistics → per-bin arrivals.

Two files per model (../shared/data/README.md, section 1):

- `*_total_10min.csv` (`window_start_s, total_rate_rps, is_gap, ...`): a piecewise-constant rate;
  arrivals per bin are Poisson with that rate.
- `*_clients_10min.csv` (`client_id, window_start_s, rate_rps, iat_cv, iat_family, iat_shape,
  iat_scale`): the burstiness is rebuilt from each client's fitted inter-arrival-time (IAT)
  distribution, as ServeGen's generator does: each (client, window) gets exactly
  n = round(rate_rps × 600) requests whose IATs come from the fitted family, rescaled so that
  the n requests fill the window.

How the clients file is rebuilt without drawing ~240 M request times (m-large, 14 days):

1. **Exact, small client-windows** (n ≤ `exact_max_requests`, default 1,000; 61 % of m-large's
   client-windows, 16 M of its 237 M requests): draw n + 1 IATs from the family
   (`gamma(a=shape)`, `weibull_min(c=shape)`; the fitted `iat_scale` cancels in the rescaling;
   no family → exponential, i.e. Poisson), take cumulative sums, and place request j at
   600 s × S_j / S_(n+1). This is ServeGen's construction, request by request, so slow bursty
   clients keep their real clustering at every time scale.
2. **Large client-windows** (mean IAT < 0.6 s): counts per bin are drawn directly from a
   Dirichlet-multinomial over the window's bins, with the window total fixed at n (as ServeGen's
   rescaling fixes it) and the per-bin variance set to the renewal-process limit
   var ≈ cv² × mean, where cv is the CV of the *fitted family* (gamma: 1/√a; Weibull:
   Γ(1+2/c)/Γ(1+1/c)² − 1), because that is what ServeGen samples (the file's empirical `iat_cv`
   is often larger than what its Weibull fit implies), capped at n (all n requests in one bin).
   Clients with cv² ≥ `solo_min_dispersion` (4, i.e. cv ≥ 2) get their own draw, so a heavy
   client's spikes stay spikes; the others are pooled per window into one draw with the pooled
   dispersion D = Σ cv²·n / Σ n (sums of independent counts add their variances). Where D < 1
   (regular clients) a share 1 − D of the requests is spread evenly and the rest multinomially,
   which gives var ≈ D × mean.
   What this loses: the bins of one window are exchangeable, so each large client has its
   long-run dispersion at every bin width. That is right for gamma clients (measured: the
   index of dispersion of exact ServeGen sampling at 1 s is within ~10 % of 1/a) but too high
   at 1 s for heavy Weibull clients (c < 0.5: exact 1-s index 0.25–0.7 × cv², reaching cv² only
   at ~10 s). Against exact sampling of whole 2-hour stretches of m-large the rebuilt rate's
   standard deviation is +10–45 % at 1-s bins, within ~10 % at 10 s and ~3 % at 60 s;
   `exact_max_requests` trades speed for exactness.

Gaps: a window whose total is 0 and `is_gap` = 1 (m-mid has 84) is a collection gap, not
silence. Its rate is filled from the same time a day earlier (else a day later), scaled so the
fill meets the real neighbours on both sides; without such a reference it is interpolated
linearly between the neighbours. A clients file uses the `is_gap` of its sibling
`*_total_10min.csv` when that file exists (a window with no client rows is a gap only if the
totals say so; the filled window is drawn with the dispersion of the last real window).
Windows that are not flagged but carry < `collapse_ratio` (5 %) of the local median rate are
partial collection (m-mid: the window after each gap, and 2 hours on day 9.6 at 0–25 rps
while its neighbours carry ~1,500); they are masked and filled the same way.
`meta['gaps_masked']` / `meta['collapses_masked']` count the filled windows.

Time: t = 0 is 00:00 of day 0 (ServeGen's convention), so `start_s` = first window's start.
Request sizes: ServeGen's per-window token distributions are not in the shared data; every bin
gets the Azure conv defaults (see `rlscale.traces.loaders.DEFAULT_*`), overridable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlscale.errors import InputError
from rlscale.traces import loaders as _ld
from rlscale.traces.workload import Workload

WINDOW_S = 600.0
WINDOWS_PER_DAY = 144
_GAMMA, _WEIBULL, _POISSON = 1, 2, 0
# Chunks bound memory: ~2 M requests (exact part) or ~2 M cells (Dirichlet-multinomial) at once.
_CHUNK_REQUESTS = 2_000_000
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class _Totals:
    first_window: int
    rate_rps: np.ndarray  # per window, gaps still 0
    is_gap: np.ndarray


def load_servegen(
    path: str | Path,
    *,
    interval_s: float = 1.0,
    seed: int = 0,
    name: str | None = None,
    prompt_tokens: float = _ld.DEFAULT_PROMPT_TOKENS,
    output_tokens: float = _ld.DEFAULT_OUTPUT_TOKENS,
    prompt_tokens_cv: float = _ld.DEFAULT_PROMPT_TOKENS_CV,
    output_tokens_cv: float = _ld.DEFAULT_OUTPUT_TOKENS_CV,
    exact_max_requests: int = 1000,
    solo_min_dispersion: float = 4.0,
    collapse_ratio: float | None = 0.05,
) -> Workload:
    """Load a ServeGen `*_clients_10min.csv` or `*_total_10min.csv` (see the module docstring)."""
    p = Path(path)
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise InputError(
            str(p), f"expected a bin width > 0 seconds, got {interval_s}", field="interval_s"
        )
    columns = set(_ld._csv_header(p))
    # Generate on the finest grid that divides a window and is no wider than interval_s, then
    # re-bin if interval_s does not divide 600 s.
    k = max(1, math.ceil(WINDOW_S / interval_s - 1e-9))
    grid_s = WINDOW_S / k
    rng = np.random.default_rng(seed)
    if {"client_id", "window_start_s", "rate_rps"} <= columns:
        counts, first, meta = _from_clients(
            p, k, rng, exact_max_requests, solo_min_dispersion, collapse_ratio
        )
    elif {"window_start_s", "total_rate_rps"} <= columns:
        counts, first, meta = _from_totals(p, k, rng, collapse_ratio)
    else:
        raise InputError(
            str(p),
            f"not a ServeGen file: expected client_id, window_start_s, rate_rps or "
            f"window_start_s, total_rate_rps in the header, got {sorted(columns)[:8]}",
        )
    n = len(counts)
    w = Workload(
        name=name or _ld._default_name(p),
        source=str(p),
        interval_s=grid_s,
        arrivals=counts.astype(float),
        prompt_tokens=np.full(n, float(prompt_tokens)),
        output_tokens=np.full(n, float(output_tokens)),
        start_s=first * WINDOW_S,
        prompt_tokens_cv=float(prompt_tokens_cv),
        output_tokens_cv=float(output_tokens_cv),
        meta={
            "format": "servegen",
            "seed": seed,
            "window_s": WINDOW_S,
            "sizes": "defaults (Azure conv)",
            **meta,
        },
    )
    return w if math.isclose(grid_s, interval_s, rel_tol=1e-9) else w.rebin(interval_s)


def read_totals(p: Path) -> _Totals:
    """Per-window totals of a `*_total_10min.csv`; windows absent from the file count as gaps."""
    df = _ld._read_csv(p, ("window_start_s", "total_rate_rps"))
    ws = _ld.numeric_column(df, "window_start_s", p)
    _ld.check_sorted(ws, "window_start_s", p, strict=True)
    widx = _window_index(ws, p)
    rate = _ld.numeric_column(df, "total_rate_rps", p)
    if "is_gap" in df.columns:
        gap = _ld.numeric_column(df, "is_gap", p)
        bad = ~np.isin(gap, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(str(p), f"expected 0 or 1, got {gap[i]:g}", row=i + 1, field="is_gap")
    else:
        gap = np.zeros(len(ws))
    first = int(widx[0])
    n = int(widx[-1]) - first + 1
    rates = np.zeros(n)
    is_gap = np.ones(n, dtype=bool)
    rates[widx - first] = rate
    is_gap[widx - first] = gap > 0
    return _Totals(first, rates, is_gap)


def fill_gaps(
    rate: np.ndarray, is_gap: np.ndarray, *, per_day: int = WINDOWS_PER_DAY
) -> np.ndarray:
    """Rates with each run of gap windows filled from the same time a day earlier (else a day
    later), scaled by the ratio real/reference on each side of the run (median over up to 3
    windows, so one odd edge window does not set the level), interpolated linearly across the
    run; runs without a full reference are interpolated linearly between their neighbours."""
    filled = np.asarray(rate, dtype=float).copy()
    gap = np.asarray(is_gap, dtype=bool)
    if gap.all():
        raise ValueError("every window is a gap")
    usable = ~gap  # grows as runs are filled, so a later run may lean on an earlier fill
    for a, b in _runs(gap):
        filled[a:b] = _seasonal_fill(filled, usable, a, b, per_day)
        usable[a:b] = True
    return filled


def _seasonal_fill(
    rate: np.ndarray, usable: np.ndarray, a: int, b: int, per_day: int
) -> np.ndarray:
    n = len(rate)
    # up to 3 real windows on each side of the run
    sides = []
    for s in (np.arange(a - 3, a), np.arange(b, b + 3)):
        s = s[(s >= 0) & (s < n)]
        s = s[usable[s]]
        if len(s):
            sides.append(s)
    run = np.arange(a, b)
    for offset in (-per_day, per_day):
        ref = run + offset
        if ref[0] < 0 or ref[-1] >= n or not usable[ref].all():
            continue
        anchors, ratios = [], []
        for s in sides:
            r = s + offset
            ok = (r >= 0) & (r < n)
            ok[ok] &= usable[r[ok]] & (rate[r[ok]] > 0)
            if ok.any():
                anchors.append(float(np.mean(s[ok])))
                ratios.append(float(np.median(rate[s[ok]] / rate[r[ok]])))
        if len(anchors) == len(sides) and anchors:
            return rate[ref] * np.interp(run, anchors, ratios)
    if not sides:
        return np.zeros(b - a)
    anchors = [float(np.mean(s)) for s in sides]
    levels = [float(np.median(rate[s])) for s in sides]
    return np.interp(run, anchors, levels)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _window_index(ws: np.ndarray, p: Path) -> np.ndarray:
    widx = np.rint(ws / WINDOW_S)
    off = np.abs(widx * WINDOW_S - ws) > 1e-6
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise InputError(
            str(p),
            f"expected a multiple of 600 (10-minute windows), got {ws[i]:g}",
            row=i + 1,
            field="window_start_s",
        )
    return widx.astype(np.int64)


def _sibling_totals(p: Path) -> Path | None:
    if "_clients" not in p.name:
        return None
    sib = p.with_name(p.name.replace("_clients", "_total", 1))
    return sib if sib.is_file() else None


def find_collapses(
    rate: np.ndarray, is_gap: np.ndarray, *, ratio: float = 0.05, half_width: int = 18
) -> np.ndarray:
    """Windows that are not flagged as gaps but whose rate is > 0 and below `ratio` × the median
    of the real windows within ±`half_width` windows (±3 h): partial collection, not traffic.
    m-mid has 18: the window right after each of its gaps (~14 rps where its neighbours carry
    ~2,000) and a 2-hour stretch on day 9.6 at 0–25 rps with clients still active."""
    import pandas as pd

    r = pd.Series(np.where(is_gap, np.nan, rate))
    local = r.rolling(2 * half_width + 1, center=True, min_periods=3).median().to_numpy()
    with np.errstate(invalid="ignore"):
        return ~is_gap & (rate > 0) & (rate < ratio * local)


def _mask_meta(gap: np.ndarray, collapsed: np.ndarray) -> dict:
    meta: dict = {
        "gaps_masked": int(gap.sum()),
        "gap_windows": np.flatnonzero(gap).tolist(),
        "collapses_masked": int(collapsed.sum()),
        "collapse_windows": np.flatnonzero(collapsed).tolist(),
    }
    if gap.any() or collapsed.any():
        meta["gap_fill"] = (
            "same time a day earlier (else later), scaled to the neighbours; else linear"
        )
    return meta


def _filled(rate: np.ndarray, masked: np.ndarray, where: Path) -> np.ndarray:
    try:
        return fill_gaps(rate, masked)
    except ValueError:
        raise InputError(
            str(where), "every window is a gap (is_gap = 1): no traffic to load", field="is_gap"
        ) from None


def _from_totals(
    p: Path, k: int, rng: np.random.Generator, collapse_ratio: float | None
) -> tuple[np.ndarray, int, dict]:
    tot = read_totals(p)
    collapsed = _collapses(tot.rate_rps, tot.is_gap, collapse_ratio)
    rate = _filled(tot.rate_rps, tot.is_gap | collapsed, p)
    counts = rng.poisson(np.repeat(rate * (WINDOW_S / k), k))
    meta = {
        "servegen_file": "total",
        **_mask_meta(tot.is_gap, collapsed),
        "expected_requests": float(rate.sum() * WINDOW_S),
        "approximation": "piecewise-constant 10-minute rate, Poisson counts per bin",
    }
    return counts, tot.first_window, meta


def _collapses(rate: np.ndarray, is_gap: np.ndarray, ratio: float | None) -> np.ndarray:
    if ratio is None or ratio <= 0:
        return np.zeros(len(rate), dtype=bool)
    return find_collapses(rate, is_gap, ratio=ratio)


@dataclass(frozen=True)
class _ClientRows:
    """A clients file's rows, checked: window index, rate, IAT family code and shape per row."""

    window: np.ndarray  # window_start_s / WINDOW_S
    rate_rps: np.ndarray
    family: np.ndarray  # _GAMMA | _WEIBULL | _POISSON
    shape: np.ndarray  # NaN allowed where the family is Poisson


def _read_clients(p: Path) -> _ClientRows:
    required = ("client_id", "window_start_s", "rate_rps", "iat_family", "iat_shape")
    df = _ld._read_csv(p, required, dtype={"iat_family": str})
    _ld.numeric_column(df, "client_id", p)
    widx = _window_index(_ld.numeric_column(df, "window_start_s", p), p)
    rate = _ld.numeric_column(df, "rate_rps", p)
    fam_text = df["iat_family"].fillna("").astype(str).str.strip().str.lower().to_numpy()
    fam = np.full(len(df), -1, dtype=np.int8)
    fam[fam_text == "gamma"] = _GAMMA
    fam[fam_text == "weibull"] = _WEIBULL
    fam[fam_text == ""] = _POISSON
    if (fam < 0).any():
        i = int(np.flatnonzero(fam < 0)[0])
        raise InputError(
            str(p),
            f"expected Gamma, Weibull or empty, got {df['iat_family'].iloc[i]!r}",
            row=i + 1,
            field="iat_family",
        )
    fitted = fam != _POISSON
    shape = _ld.numeric_column(df, "iat_shape", p, allow_missing=~fitted)
    nonpos = fitted & (shape <= 0)
    if nonpos.any():
        i = int(np.flatnonzero(nonpos)[0])
        raise InputError(
            str(p),
            f"expected a shape > 0 for family {df['iat_family'].iloc[i]}, got {shape[i]:g}",
            row=i + 1,
            field="iat_shape",
        )
    return _ClientRows(widx, rate, fam, shape)


@dataclass(frozen=True)
class _WindowGrid:
    first: int  # window index of the first window
    n_windows: int
    w: np.ndarray  # each row's window, from 0
    gap: np.ndarray  # (n_windows,) collection gaps
    where_gap: Path  # the file that says which windows are gaps


def _window_grid(p: Path, rows: _ClientRows) -> _WindowGrid:
    """The window grid and which windows are gaps come from the sibling totals file if there is
    one; without it, windows with no client rows are zero traffic (nothing says otherwise)."""
    widx = rows.window
    sib = _sibling_totals(p)
    if sib is None:
        first, n_windows = int(widx.min()), int(widx.max() - widx.min()) + 1
        return _WindowGrid(first, n_windows, widx - first, np.zeros(n_windows, dtype=bool), p)
    tot = read_totals(sib)
    first, n_windows = tot.first_window, len(tot.rate_rps)
    outside = (widx < first) | (widx >= first + n_windows)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InputError(
            str(p),
            f"window {widx[i] * WINDOW_S:g} s is outside the span of {sib.name}",
            row=i + 1,
            field="window_start_s",
        )
    w = widx - first
    has_rows = np.bincount(w, minlength=n_windows) > 0
    return _WindowGrid(first, n_windows, w, tot.is_gap & ~has_rows, sib)


@dataclass(frozen=True)
class _Split:
    """How each client-window is drawn: exactly, on its own (over-dispersed), or pooled."""

    n_req: np.ndarray  # expected requests per row
    disp: np.ndarray  # var / mean of its count, capped at n_req
    active: np.ndarray
    exact: np.ndarray
    solo: np.ndarray
    pooled: np.ndarray


def _split(
    rows: _ClientRows, w: np.ndarray, masked: np.ndarray, exact_max: int, solo_min_dispersion: float
) -> _Split:
    n_req = np.rint(rows.rate_rps * WINDOW_S).astype(np.int64)
    disp = np.minimum(family_cv2(rows.family, rows.shape), np.maximum(n_req, 1))
    active = (n_req > 0) & ~masked[w]
    exact = active & (n_req <= exact_max)
    solo = active & ~exact & (disp >= solo_min_dispersion)
    return _Split(n_req, disp, active, exact, solo, active & ~exact & ~solo)


def _pooled_draw(
    s: _Split,
    w: np.ndarray,
    n_windows: int,
    window_rate: np.ndarray,
    masked: np.ndarray,
    where_gap: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """(requests, var) per window drawn once: the pooled clients' sums and, for a masked window,
    its filled rate with the pooled dispersion of all clients in the last real window before it."""
    win_n = np.bincount(w[s.pooled], weights=s.n_req[s.pooled], minlength=n_windows)
    win_var = np.bincount(w[s.pooled], weights=(s.disp * s.n_req)[s.pooled], minlength=n_windows)
    if masked.any():
        filled = _filled(window_rate, masked, where_gap)
        all_n = np.bincount(w[s.active], weights=s.n_req[s.active], minlength=n_windows)
        all_var = np.bincount(
            w[s.active], weights=(s.disp * s.n_req)[s.active], minlength=n_windows
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            d_all = np.where((all_n > 0) & ~masked, all_var / all_n, np.nan)
        d_all = _ffill(d_all)
        win_n[masked] = np.rint(filled[masked] * WINDOW_S)
        win_var[masked] = d_all[masked] * win_n[masked]
    return win_n, win_var


def _from_clients(
    p: Path,
    k: int,
    rng: np.random.Generator,
    exact_max: int,
    solo_min_dispersion: float,
    collapse_ratio: float | None,
) -> tuple[np.ndarray, int, dict]:
    rows = _read_clients(p)
    grid = _window_grid(p, rows)
    w, n_windows = grid.w, grid.n_windows
    window_rate = np.bincount(w, weights=rows.rate_rps, minlength=n_windows)
    collapsed = _collapses(window_rate, grid.gap, collapse_ratio)
    masked = grid.gap | collapsed
    s = _split(rows, w, masked, exact_max, solo_min_dispersion)

    # draws in this order, from one rng: exact client-windows, solo ones, then one per window
    counts = np.zeros(n_windows * k, dtype=np.int64)
    counts += _exact_counts(
        rng, w[s.exact], s.n_req[s.exact], rows.family[s.exact], rows.shape[s.exact], k, n_windows
    )
    if s.solo.any():
        cell = _dm_counts(rng, s.n_req[s.solo], s.disp[s.solo], k)
        flat = (w[s.solo][:, None] * k + np.arange(k)).ravel()
        counts += np.bincount(flat, weights=cell.ravel(), minlength=n_windows * k).astype(np.int64)
    win_n, win_var = _pooled_draw(s, w, n_windows, window_rate, masked, grid.where_gap)
    sel = win_n > 0
    if sel.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            d_win = win_var[sel] / win_n[sel]
        cell = _dm_counts(rng, win_n[sel].astype(np.int64), d_win, k)
        counts.reshape(n_windows, k)[sel] += cell

    meta = {
        "servegen_file": "clients",
        **_mask_meta(grid.gap, collapsed),
        "expected_requests": float(s.n_req[s.active].sum() + win_n[masked].sum()),
        "client_windows": int(s.active.sum()),
        "client_windows_exact": int(s.exact.sum()),
        "client_windows_solo": int(s.solo.sum()),
        "client_windows_pooled": int(s.pooled.sum()),
        "exact_max_requests": int(exact_max),
        "approximation": (
            "exact ServeGen IAT sampling for client-windows with <= exact_max_requests requests; "
            "Dirichlet-multinomial counts per bin with var = cv^2 x mean (cv of the fitted family) "
            "and the window total fixed for larger ones (own draw if cv^2 >= solo_min_dispersion, "
            "else pooled per window)"
        ),
    }
    return counts, grid.first, meta


def family_cv2(fam: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Squared CV of the fitted IAT law: gamma(a) → 1/a; weibull_min(c) → Γ(1+2/c)/Γ(1+1/c)² − 1;
    no family (Poisson) → 1. The file's `iat_cv` is the empirical CV, which the Weibull fits
    often miss (implied/empirical median 0.8 in m-large); ServeGen samples the family, so we do."""
    from scipy.special import gammaln

    out = np.ones(len(fam))
    g = fam == _GAMMA
    out[g] = 1.0 / shape[g]
    wb = fam == _WEIBULL
    c = shape[wb]
    with np.errstate(over="ignore"):
        out[wb] = np.expm1(np.minimum(gammaln(1 + 2 / c) - 2 * gammaln(1 + 1 / c), 700.0))
    return out


def _ffill(x: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(x)
    if not ok.any():
        return np.ones_like(x)
    idx = np.where(ok, np.arange(len(x)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    out[: np.flatnonzero(ok)[0]] = x[np.flatnonzero(ok)[0]]  # leading gaps: next real window
    return out


def _exact_counts(
    rng: np.random.Generator,
    window: np.ndarray,
    n: np.ndarray,
    fam: np.ndarray,
    shape: np.ndarray,
    k: int,
    n_windows: int,
) -> np.ndarray:
    """Counts per bin of ServeGen's construction: n + 1 IATs, request j at 600 × S_j / S_(n+1)."""
    counts = np.zeros(n_windows * k, dtype=np.int64)
    if len(n) == 0:
        return counts
    reps = n + 1
    ends = np.cumsum(reps)
    start = 0
    while start < len(n):
        stop = int(
            np.searchsorted(ends, (ends[start - 1] if start else 0) + _CHUNK_REQUESTS, side="right")
        )
        stop = max(stop, start + 1)
        sl = slice(start, stop)
        bins = _place_requests(rng, reps[sl], fam[sl], shape[sl], k)
        counts += np.bincount(np.repeat(window[sl], n[sl]) * k + bins, minlength=n_windows * k)
        start = stop
    return counts


def _place_requests(
    rng: np.random.Generator, reps: np.ndarray, fam: np.ndarray, shape: np.ndarray, k: int
) -> np.ndarray:
    """Bin index (0..k-1) inside its window of every request of these client-windows."""
    total = int(reps.sum())
    seg = np.repeat(np.arange(len(reps)), reps)
    f = fam[seg]
    a = np.where(f == _POISSON, 1.0, shape[seg])
    # Work in logs: gamma(a) with a ~ 1e-4 underflows to 0 and weibull(c ~ 0.01) overflows.
    # gamma(a) = gamma(a + 1) × U^(1/a); weibull_min(c) = E^(1/c) with E ~ Exp(1).
    log_x = np.empty(total)
    g = f != _WEIBULL
    u = 1.0 - rng.random(total)  # in (0, 1]
    with np.errstate(divide="ignore"):
        log_x[g] = np.log(rng.gamma(a[g] + 1.0)) + np.log(u[g]) / a[g]
        log_x[~g] = np.log(-np.log(u[~g])) / a[~g]
    starts = np.concatenate([[0], np.cumsum(reps)[:-1]])
    log_x -= np.maximum.reduceat(log_x, starts)[seg]
    x = np.exp(log_x)
    x /= np.add.reduceat(x, starts)[seg]
    c = np.cumsum(x)
    before = np.concatenate([[0.0], c[starts[1:] - 1]])
    frac = c - before[seg]
    keep = np.ones(total, dtype=bool)
    keep[starts + reps - 1] = False  # the (n+1)-th IAT only closes the window
    return np.minimum((frac[keep] * k).astype(np.int64), k - 1)


def _dm_counts(
    rng: np.random.Generator, n: np.ndarray, dispersion: np.ndarray, k: int
) -> np.ndarray:
    """(len(n), k) counts per bin, each row summing to n with per-bin variance ≈ dispersion × n/k.

    Over-dispersed rows (D > 1): Dirichlet-multinomial with total concentration
    A = (n − D) / (D − 1), from var = m (1 − 1/k)(n + A)/(1 + A). Under-dispersed rows: a share
    1 − D spread evenly (systematic rounding from a random offset), the rest multinomial."""
    out = np.empty((len(n), k), dtype=np.int64)
    rows_per_chunk = max(1, _CHUNK_CELLS // k)
    for s in range(0, len(n), rows_per_chunk):
        nn = n[s : s + rows_per_chunk].astype(np.int64)
        d = np.clip(
            np.nan_to_num(dispersion[s : s + rows_per_chunk], nan=1.0), 0.0, np.maximum(nn, 1)
        )
        over = d > 1.0 + 1e-9
        p = np.full((len(nn), k), 1.0 / k)
        if over.any():
            conc = np.maximum((nn[over] - d[over]) / (d[over] - 1.0), 1e-9) / k
            alpha = np.repeat(conc[:, None], k, axis=1)
            u = 1.0 - rng.random(alpha.shape)
            log_w = np.log(rng.gamma(alpha + 1.0)) + np.log(u) / alpha
            log_w -= log_w.max(axis=1, keepdims=True)
            wts = np.exp(log_w)
            p[over] = wts / wts.sum(axis=1, keepdims=True)
        n_random = np.where(over, nn, np.rint(nn * np.minimum(d, 1.0)).astype(np.int64))
        block = rng.multinomial(n_random, p)
        n_even = nn - n_random
        if n_even.any():
            step = n_even[:, None] / k
            offset = rng.random((len(nn), 1))
            j = np.arange(k + 1)[None, :]
            block += np.diff(np.floor(j * step + offset), axis=1).astype(np.int64)
        out[s : s + rows_per_chunk] = block
    return out
