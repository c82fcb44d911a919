"""The run-time shield's rules on crafted metric rows, and the env path (`ClampedFleet`)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from rlscale.contract import FIELD_INDEX, N_FIELDS
from rlscale.envs.cluster import ClusterSim
from rlscale.envs.fleet import ClampedFleet
from rlscale.profiles.model import load_profile
from rlscale.safety import SafetyLimits
from rlscale.serving.capacity import slo_capacity_rps
from rlscale.serving.shield import (
    CONSOLIDATION,
    FLOOR,
    HANDOVER,
    NONE,
    QUEUE,
    Shield,
    ShieldConfig,
    default_shield,
    fleet_for,
)
from rlscale.traces.workload import Workload

_F = FIELD_INDEX
PROFILE = load_profile("llama-3.1-8b-h100")
ISL, OSL = PROFILE.typical_prompt_tokens, PROFILE.typical_output_tokens


def rows(
    b: int = 1,
    *,
    rps: float = 20.0,
    prompt: float = ISL,
    output: float = OSL,
    waiting: float = 0.0,
    ready: float = 4.0,
    ttft_p95: float = 0.5,
    tpot_p95: float = 0.03,
) -> np.ndarray:
    r = np.zeros((b, N_FIELDS))
    r[:, _F["arrival_rps"]] = rps
    r[:, _F["prompt_tokens_per_s"]] = rps * prompt
    r[:, _F["output_tokens_per_s"]] = rps * output
    r[:, _F["requests_waiting"]] = waiting
    r[:, _F["replicas_ready"]] = ready
    r[:, _F["ttft_p95_s"]] = ttft_p95
    r[:, _F["tpot_p95_s"]] = tpot_p95
    return r


# The utilisations the worked examples below use (floor 0.85, consolidation 0.75), not the
# shipped defaults: the tests pin the mechanics, `benchmarks/shield_calibration.py` the values.
EXAMPLE = {"floor_utilisation": 0.85, "consolidation_utilisation": 0.75}


def shield(b: int = 1, **cfg: float) -> Shield:
    return Shield(
        ShieldConfig(**(EXAMPLE | cfg)), PROFILE, b, interval_s=15.0, ttft_slo_s=2.0, tpot_slo_s=0.1
    )


def cap(prompt: float = ISL, output: float = OSL) -> float:
    return slo_capacity_rps(PROFILE, prompt, output)


def test_floor_raises_a_short_scale_up_to_the_rule_and_lets_more_through() -> None:
    s = shield(2)
    # 80 req/s needs ceil(80 / (cap x 0.85)) replicas; the policy asks for 2 / for 30
    want = int(np.ceil(80.0 / (cap() * 0.85)))
    r = s.apply(np.array([2.0, 30.0]), np.array([3.0, 3.0]), rows(2, rps=80.0, ready=3))
    assert want > 3
    assert r.target.tolist() == [want, 30.0]
    assert r.fired.tolist() == [FLOOR, NONE]


def test_floor_is_token_aware_ten_times_the_prompt_is_more_replicas() -> None:
    short = shield().apply(np.array([1.0]), np.array([1.0]), rows(rps=3.0, ready=1))
    long = shield().apply(np.array([1.0]), np.array([1.0]), rows(rps=3.0, prompt=10 * ISL, ready=1))
    assert short.target[0] == 1 and short.fired[0] == NONE  # 3 req/s of typical requests: 1 is fine
    assert long.capacity_rps[0] < cap() / 5
    assert long.target[0] == np.ceil(3.0 / (long.capacity_rps[0] * 0.85)) and long.fired[0] == FLOOR


def test_a_fleet_is_sized_at_its_own_pooled_capacity_not_one_replicas() -> None:
    """At 10x prompts one 8B replica holds the SLO up to 1.17 req/s, but 16 replicas hold it up
    to ~2.3 req/s each (more slots pool the long prefills). Sized at one replica's figure, the
    shield held 19-20 replicas where the policy's 13 met the SLO (681 $ against 481 $ on m-large
    day 11): a fleet is sized at its own per-replica capacity."""
    # the shield's own curve (request sizes rounded up to its 2 % grid): 1, 2, 4, 8, 16, ...
    curve = shield().capacity_rps(rows(prompt=10 * ISL))[0]
    one, sixteen = curve[0], curve[4]
    assert one == pytest.approx(cap(10 * ISL), rel=0.05) and sixteen > 1.8 * one
    # a scale-down 20 -> 12 while 16 replicas' worth (at 0.75) arrived: stops at 16, not at
    # ceil(demand / (one x 0.75)) = 31 (capped at the 20 it has)
    rps = 16 * sixteen * 0.75 * 0.99
    r = shield().apply(np.array([12.0]), np.array([20.0]), rows(rps=rps, prompt=10 * ISL, ready=20))
    assert r.fired[0] == CONSOLIDATION and r.target[0] == 16
    assert np.ceil(rps / (one * 0.75)) > 20
    # and no more than what the demand needs passes unchallenged
    ok = shield().apply(
        np.array([16.0]), np.array([20.0]), rows(rps=rps, prompt=10 * ISL, ready=20)
    )
    assert ok.fired[0] == NONE and ok.target[0] == 16


def test_fleet_for_is_the_smallest_fleet_that_carries_the_demand() -> None:
    grid = np.array([[10.0, 12.0, 14.0, 16.0, 17.0, 17.5, 18.0]])  # per replica at 1, 2, 4, ...
    for demand, want in ((0.0, 0), (7.9, 1), (8.1, 2), (2 * 12.0 * 0.8, 2), (40.0, 4)):
        n, c = fleet_for(np.array([demand]), grid, 0.8)
        assert n[0] == want, demand
        assert demand == 0 or n[0] * c[0] * 0.8 >= demand
        assert demand == 0 or (n[0] - 1) * grid[0, 0] * 0.8 < demand or n[0] == 1
    # 3 replicas: halfway between 2 and 4 in log2 -> 12 + (14 - 12) x log2(1.5) each
    n, c = fleet_for(np.array([3 * 13.0 * 0.8]), grid, 0.8)
    assert n[0] == 3 and c[0] == pytest.approx(12.0 + 2.0 * np.log2(1.5))
    # beyond the search: demand over the last capacity
    n, _ = fleet_for(np.array([1e6]), grid, 0.8)
    assert n[0] == np.ceil(1e6 / (18.0 * 0.8))


def test_one_replica_under_heavy_load_is_floored() -> None:
    """A policy proposing 1 replica under heavy load (the 2.2 % case) is floored."""
    s = shield()
    r = s.apply(np.array([1.0]), np.array([1.0]), rows(rps=150.0, waiting=400.0, ready=1))
    assert r.fired[0] == FLOOR
    assert r.target[0] >= (150.0 + 400.0 / 30.0) / cap()


def test_queue_blocks_a_scale_down() -> None:
    s = shield()
    # little arrival but a queue of 10 per ready replica: the policy may not shrink into it
    r = s.apply(np.array([2.0]), np.array([4.0]), rows(rps=1.0, waiting=40.0, ready=4))
    assert r.target[0] == 4 and r.fired[0] == QUEUE


def test_consolidation_check_stops_a_scale_down_at_what_the_survivors_carry() -> None:
    s = shield()
    c = cap()
    # 6 replicas carrying 4 x c x 0.7 req/s: 4 survivors would run at 0.7 of capacity (passes at
    # 0.75); 3 survivors at 0.93 (fails): the scale-down 6 -> 2 stops at 4
    rps = 4 * c * 0.7
    r = s.apply(np.array([2.0]), np.array([6.0]), rows(rps=rps, ready=6))
    assert r.target[0] == 4 and r.fired[0] == CONSOLIDATION
    ok = shield().apply(np.array([4.0]), np.array([6.0]), rows(rps=rps, ready=6))
    assert ok.target[0] == 4 and ok.fired[0] == NONE


def test_consolidation_uses_the_recent_peak() -> None:
    s = shield(lookback_s=60.0)
    c = cap()
    s.apply(np.array([6.0]), np.array([6.0]), rows(rps=5 * c * 0.7, ready=6))  # a busy interval
    r = s.apply(np.array([2.0]), np.array([6.0]), rows(rps=c * 0.5, ready=6))  # then a lull
    assert r.target[0] == 5 and r.fired[0] == CONSOLIDATION


def test_a_null_lookback_is_the_profiles_cold_start() -> None:
    # 8B: a 132-s mean cold start is 9 intervals of 15 s; a burst 8 intervals ago still holds
    # the fleet, one 10 intervals ago no longer does
    s = Shield(
        ShieldConfig(**EXAMPLE, lookback_s=None),
        PROFILE,
        1,
        interval_s=15.0,
        ttft_slo_s=2.0,
        tpot_slo_s=0.1,
    )
    assert s.lookback_s == PROFILE.mean_cold_start_s
    assert s.demand.shape == (1, 9)
    c = cap()
    busy, lull = rows(rps=5 * c * 0.7, ready=6), rows(rps=c * 0.5, ready=6)
    s.apply(np.array([6.0]), np.array([6.0]), busy)
    for _ in range(7):
        s.apply(np.array([6.0]), np.array([6.0]), lull)
    held = s.apply(np.array([2.0]), np.array([6.0]), lull)  # the burst is 8 intervals back
    assert held.target[0] == 5 and held.fired[0] == CONSOLIDATION
    s.apply(np.array([6.0]), np.array([6.0]), lull)
    free = s.apply(np.array([2.0]), np.array([6.0]), lull)  # 10 back: out of the lookback
    assert free.target[0] == 2 and free.fired[0] == NONE
    assert shield().demand.shape == (1, 4)  # the default 60 s


def test_unobserved_arrivals_pass_no_consolidation_and_set_no_floor() -> None:
    s = shield()
    r0 = rows(rps=np.nan)
    r = s.apply(np.array([2.0]), np.array([5.0]), r0)
    assert r.target[0] == 5 and r.fired[0] == CONSOLIDATION
    r = shield().apply(np.array([5.0]), np.array([5.0]), rows(rps=np.nan))
    assert r.target[0] == 5 and r.fired[0] == NONE


def test_handover_after_k_breached_intervals_while_the_policy_holds_until_recovery() -> None:
    s = shield(breach_intervals=2, recover_intervals=3)
    c = cap()
    bad = rows(rps=3.5 * c, ready=4, ttft_p95=6.0)  # floor 0.85: 5; rule 0.7: 5
    good = rows(rps=3.5 * c, ready=6, ttft_p95=0.5)
    rule = np.ceil(3.5 * c / (c * 0.7))
    r1 = s.apply(np.array([6.0]), np.array([6.0]), bad)  # breached, policy holds: 1
    assert not r1.handover[0] and r1.fired[0] == NONE
    r2 = s.apply(np.array([6.0]), np.array([6.0]), bad)  # 2 in a row: the rule takes over
    assert r2.handover[0]
    # the rule decides: no scale-down while breached, the policy may add more
    r3 = s.apply(np.array([3.0]), np.array([6.0]), bad)
    assert r3.handover[0] and r3.fired[0] == HANDOVER and r3.target[0] == max(6.0, rule)
    r4 = s.apply(np.array([9.0]), np.array([6.0]), bad)
    assert r4.target[0] == 9.0
    for _ in range(2):  # two good intervals: not yet recovered
        assert s.apply(np.array([6.0]), np.array([6.0]), good).handover[0]
    assert not s.apply(np.array([6.0]), np.array([6.0]), good).handover[0]  # third: handed back


def test_no_handover_while_the_policy_scales_up() -> None:
    s = shield(breach_intervals=2)
    bad = rows(rps=10.0, ready=4, ttft_p95=6.0)
    for n in (5.0, 6.0, 7.0):
        r = s.apply(np.array([n + 1]), np.array([n]), bad)
        assert not r.handover[0]


def test_reset_forgets_the_state_of_the_masked_clusters() -> None:
    s = shield(2, breach_intervals=1)
    bad = rows(2, rps=10.0, ttft_p95=6.0)
    s.apply(np.array([4.0, 4.0]), np.array([4.0, 4.0]), bad)
    assert s.handover.tolist() == [True, True]
    s.reset(np.array([True, False]))
    assert s.handover.tolist() == [False, True]
    assert s.counts()[0] == dict.fromkeys(s.counts()[0], 0)


def test_config_refuses_a_band_that_would_oscillate() -> None:
    with pytest.raises(ValidationError, match="consolidation_utilisation"):
        ShieldConfig(floor_utilisation=0.7, consolidation_utilisation=0.8)


def test_defaults_on_for_learned_policies_off_for_rules() -> None:
    assert default_shield("ppo") == ShieldConfig()
    assert default_shield("hpa") is None and default_shield("tuned") is None


def _flat(rps: float, prompt: float, n: int = 80) -> Workload:
    return Workload(
        name="flat",
        source="test",
        interval_s=15.0,
        arrivals=np.full(n, rps * 15.0),
        prompt_tokens=np.full(n, prompt),
        output_tokens=np.full(n, float(OSL)),
    )


def test_env_path_floors_a_one_replica_policy_and_counts_it() -> None:
    """ClampedFleet with the shield: a policy that always asks for 1 replica under a load of
    long prompts gets the floor; without the shield it stays at 1 and the SLO collapses."""
    w = _flat(6.0, 10 * ISL)
    lim = SafetyLimits(min_replicas=1, max_replicas=40)
    out = {}
    for on in (False, True):
        sim = ClusterSim(PROFILE, [w, w], batch=2, seed=0)
        fleet = ClampedFleet(sim, lim, [ShieldConfig() if on else None, None])
        fleet.start()
        for step in range(60):
            fleet.step(np.ones(2), 15.0 * step)
        out[on] = (fleet.current.copy(), sim.totals.slo_ok / sim.totals.arrived)
        counts = fleet.shield_counts()
        assert counts[1] == dict.fromkeys(counts[1], 0)  # the unshielded cluster
        if on:
            assert counts[0]["shield_floor"] > 0
            assert fleet.shielded().tolist() == [True, False]
    assert out[False][0].tolist() == [1, 1]
    # 6 req/s of 11,550-token prompts: ~1.9 req/s a replica within the SLO in a fleet of 4-5
    assert out[True][0][0] >= 4 and out[True][0][1] == 1
    assert out[True][1][0] > out[False][1][0] + 0.5
