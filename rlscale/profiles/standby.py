"""Standby tiers: what a warm-pool member physically is, as stages of the profile's cold start.

A pool member is *filled* (the time from asking for it to its standing by) and, on a scale-up,
*woken* (the time from taking it to its replica serving). Every tier holds the GPUs of one
replica while it stands by, so every tier is paid at the full replica price (`envs.cluster`);
they differ only in how much of the cold start is done ahead.

| tier             | stands by as                                  | fill                               | wake (on scale-up)                         |
|------------------|-----------------------------------------------|------------------------------------|--------------------------------------------|
| `sleeping`       | a loaded vLLM replica in sleep mode (GPU held) | the profile's cold start           | the profile's `warm_wake`                  |
| `warm_node`      | a GPU node held by a placeholder pod           | the node stage, always             | the cold start less the node stage; the image pull at P(uncached given a new node) |
| `preloaded_node` | a held node with image and weights on local disk (a pre-pull DaemonSet) | node + image pull + weight copy, always | the cold start less node and pull; weights from local disk |

Where the numbers come from (`../shared/data/cold_start_measurements.csv`):

- The pull stage's probability in the profile is P(new node) x P(image not cached on it) (the
  profile's `sources`: 0.2 x 0.5). A held node is a new node no model pod has run on, so a
  `warm_node` wake pulls with P = pull / node probability (0.5), not the fleet's 0.1.
- Weights from node-local disk: the CSV has no row for "weights on local NVMe after a pre-pull"
  for these models. The profile's `weight_load` stage is documented as low = warm page cache,
  mode = local NVMe / streamer, high = cold disk or network volume; a preloaded node reads from
  local disk, so its range is (low, mode, mode): the network tail is cut, the page cache is not
  assumed. Checked against the rows: 8B (15 GB) ids=ice_Llama-2-7B_weights_uncached (warm page
  cache 1.81 s), runai_io2_streamer 7.53 s, runai_gp3_streamer 14.34 s -> profile (3, 15, 15) is
  at or above them; 70B FP8 (70 GB) id=vllm19824_weight_load_to_gpu 10 s (hot page cache), the
  streamer rows scaled by size 70/15 -> 35 / 67 s, sllm_load_llama2_70b 84 s for 130 GB ->
  45 s for 70 GB -> profile (20, 60, 60) is at or above them.
- The preloaded fill copies the weights onto the node: the profile's `weight_load` stage as is
  (a network-volume read is its high end), with the node and the pull stages always present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from rlscale.errors import InputError
from rlscale.profiles.model import ServiceProfile, Stage

StandbyTier = Literal["sleeping", "warm_node", "preloaded_node"]
TIERS: tuple[str, ...] = get_args(StandbyTier)

# the profile stages a tier skips or changes, found by name (the fitted profiles' names)
StageKind = Literal["node", "image_pull", "weight"]


def find_stage(profile: ServiceProfile, kind: StageKind) -> Stage | None:
    """The profile's node-provisioning, image-pull or weight-load stage (None if it has none),
    found by name as the fitted profiles name them."""
    return next((s for s in profile.cold_start if kind in s.name), None)


def _find(profile: ServiceProfile, key: StageKind) -> Stage:
    found = find_stage(profile, key)
    if found is not None:
        return found
    raise InputError(
        profile.name,
        f"no cold-start stage named like {key!r}; a node tier needs node, image-pull and "
        "weight-load stages",
        field="cold_start",
    )


def _with(s: Stage, **update: float) -> Stage:
    return s.model_copy(update=update)


def _sample(
    profile: ServiceProfile, stages: list[Stage], rng: np.random.Generator, n: int
) -> np.ndarray:
    # the profile's own sampler on substituted stages, so the draws are made the same way
    return profile.model_copy(update={"cold_start": stages}).sample_cold_start_s(rng, n)


@dataclass(frozen=True)
class Standby:
    """The fill and wake stages of one tier for one profile (`None`: the profile's own)."""

    tier: str
    fill: list[Stage] | None
    wake: list[Stage] | None
    profile: ServiceProfile

    def sample_fill_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.fill is None:
            return self.profile.sample_cold_start_s(rng, n)
        return _sample(self.profile, self.fill, rng, n)

    def sample_wake_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.wake is None:
            return self.profile.sample_wake_s(rng, n)
        return _sample(self.profile, self.wake, rng, n)

    @property
    def max_wake_s(self) -> float:
        stages = [self.profile.warm_wake] if self.wake is None else self.wake
        return float(sum(s.high_s for s in stages if s.probability > 0))

    @property
    def mean_wake_s(self) -> float:
        stages = [self.profile.warm_wake] if self.wake is None else self.wake
        return float(sum(s.mean_s for s in stages))

    @property
    def mean_fill_s(self) -> float:
        return float(
            sum(s.mean_s for s in (self.profile.cold_start if self.fill is None else self.fill))
        )


def bound_start(
    profile: ServiceProfile, *, image_cached: bool, weights_cached: bool
) -> list[Stage]:
    """The cold-start stages of a pod once it is bound to a node that is up (the node's own wait
    is then behind it): no node stage; the image pull, always, unless the node has the image;
    the weights from local disk, (low, mode, mode) as the preloaded tier reads them, when the
    node has them. A stage the profile lacks is nothing to drop or shorten."""
    node, pull, weights = (find_stage(profile, k) for k in ("node", "image_pull", "weight"))
    out = []
    for s in profile.cold_start:
        if s is node or (s is pull and image_cached):
            continue
        if s is pull:
            out.append(_with(s, probability=1.0))  # an uncached node pulls, for sure
        elif s is weights and weights_cached:
            out.append(_with(s, high_s=s.mode_s))
        else:
            out.append(s)
    return out


def sample_stages_s(
    profile: ServiceProfile, stages: list[Stage], rng: np.random.Generator, n: int
) -> np.ndarray:
    """Draws of the sum of `stages`, made as the profile's own cold start is drawn."""
    return _sample(profile, stages, rng, n)


def standby(profile: ServiceProfile, tier: str) -> Standby:
    """The `Standby` of `tier` (one of TIERS) for `profile`; InputError names a bad tier."""
    if tier not in TIERS:
        raise InputError("standby_tier", f"{tier!r}: expected one of {', '.join(TIERS)}")
    if tier == "sleeping":
        return Standby(tier, None, None, profile)
    node, pull, weights = (_find(profile, k) for k in ("node", "image_pull", "weight"))
    p_pull_new_node = min(pull.probability / node.probability, 1.0) if node.probability else 1.0
    rest = [s for s in profile.cold_start if s not in (node, pull)]
    if tier == "warm_node":
        fill = [_with(node, probability=1.0)]
        wake = [_with(pull, probability=p_pull_new_node), *rest]
    else:
        fill = [_with(node, probability=1.0), _with(pull, probability=1.0), weights]
        wake = bound_start(profile, image_cached=True, weights_cached=True)
    return Standby(tier, fill, wake, profile)
