"""The one workload type every loader produces and the simulator consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Workload:
    """Arrivals per bin plus the mean request size in each bin, with where it came from.

    `arrivals[t]` is the number of requests arriving in bin t (a float: rescaled traces carry
    fractional counts), bins are `interval_s` wide and bin 0 starts at `start_s` (Unix seconds for
    traces with a calendar, otherwise seconds since the trace's own midnight, so time of day is
    `start_s + t * interval_s` modulo 86,400 either way). `prompt_tokens[t]` / `output_tokens[t]`
    are the mean sizes of the requests of bin t (the workload mean where a bin is empty);
    `*_cv` are the coefficients of variation of request sizes over the whole workload.
    """

    name: str
    source: str
    interval_s: float
    arrivals: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    start_s: float = 0.0
    prompt_tokens_cv: float = 1.0
    output_tokens_cv: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.arrivals)
        if self.interval_s <= 0:
            raise ValueError(f"{self.source}: interval_s must be > 0, got {self.interval_s}")
        for name in ("prompt_tokens", "output_tokens"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{self.source}: {name} has {len(getattr(self, name))} bins, arrivals {n}"
                )
        if n == 0:
            raise ValueError(f"{self.source}: workload has no bins")
        if not np.all(np.isfinite(self.arrivals)) or np.any(self.arrivals < 0):
            raise ValueError(f"{self.source}: arrivals must be finite and >= 0")

    @property
    def n_bins(self) -> int:
        return len(self.arrivals)

    @property
    def duration_s(self) -> float:
        return self.n_bins * self.interval_s

    @property
    def rate_rps(self) -> np.ndarray:
        return self.arrivals / self.interval_s

    @property
    def total_requests(self) -> float:
        return float(self.arrivals.sum())

    def with_(self, **changes: Any) -> Workload:
        return replace(self, **changes)

    def rebin(self, interval_s: float) -> Workload:
        """Re-bin to `interval_s`. Integer multiples of the current width sum bins exactly (mean
        sizes weighted by arrivals); integer divisions split each bin evenly. Any other ratio
        interpolates the cumulative arrival curve. The total is always conserved: when the
        duration is not a multiple of `interval_s` the last bin is partial."""
        if np.isclose(interval_s, self.interval_s):
            return self
        edges_old = self.start_s + self.interval_s * np.arange(self.n_bins + 1)
        # ceil, not floor: a trailing partial bin keeps the last requests (its rate reads low)
        n_new = max(1, int(np.ceil(self.duration_s / interval_s - 1e-9)))
        edges_new = self.start_s + interval_s * np.arange(n_new + 1)
        cum = np.concatenate([[0.0], np.cumsum(self.arrivals)])
        cum_new = np.interp(edges_new, edges_old, cum)
        arrivals = np.diff(cum_new)
        # Token-weighted sums interpolate the same way, so means stay request-weighted.
        out = []
        for sizes in (self.prompt_tokens, self.output_tokens):
            cum_tok = np.concatenate([[0.0], np.cumsum(sizes * self.arrivals)])
            tok = np.diff(np.interp(edges_new, edges_old, cum_tok))
            # bins with no arrivals keep the size of their time (nearest old bin)
            centre = (edges_new[:-1] + edges_new[1:]) / 2
            idx = np.clip(
                ((centre - self.start_s) // self.interval_s).astype(int), 0, self.n_bins - 1
            )
            fallback = sizes[idx]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(arrivals > 1e-9, tok / np.maximum(arrivals, 1e-12), fallback)
            out.append(mean)
        return replace(
            self,
            interval_s=float(interval_s),
            arrivals=np.maximum(arrivals, 0.0),
            prompt_tokens=out[0],
            output_tokens=out[1],
        )
