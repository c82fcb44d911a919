"""The one rollout loop: a batch of runs, each a policy under its own limits on its own workload,
stepped through the clamps (`ClampedFleet`) the RL environment uses too."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.envs.cluster import ClusterSim
from rlscale.envs.fleet import ClampedFleet
from rlscale.evaluation.rollout import Run, rollout, run_batch
from rlscale.policies.static import StaticPolicy
from rlscale.safety import SafetyLimits
from tests.conftest import constant_workload, make_profile


def test_each_run_is_clamped_by_its_own_limits_and_scores_as_its_own_rollout():
    # a fixed cold start makes the simulator deterministic, so batch and single rollouts agree
    prof = make_profile(cold_start_s=(30.0, 30.0, 30.0))
    ws = [constant_workload(40.0, 120), constant_workload(90.0, 120)]
    small, large = (
        SafetyLimits(min_replicas=1, max_replicas=4),
        SafetyLimits(min_replicas=1, max_replicas=8),
    )
    runs = [
        Run(StaticPolicy(12), small, 0),
        Run(StaticPolicy(12), large, 1),
        Run(StaticPolicy(12), small, 1),
    ]
    got = run_batch(runs, prof, ws, sim_seed=5, initial_replicas=1).summaries
    assert [s.workload for s in got] == [ws[0].name, ws[1].name, ws[1].name]
    assert got[0].mean_replicas <= 4 and got[2].mean_replicas <= 4 < got[1].mean_replicas <= 8
    for run, s in zip(runs, got, strict=True):
        ref = rollout(
            lambda _s: StaticPolicy(12),
            prof,
            ws[run.workload],
            limits=run.limits,
            initial_replicas=1,
        )
        assert (s.cost_usd, s.slo_attainment) == pytest.approx(
            (ref.summaries[0].cost_usd, ref.summaries[0].slo_attainment), rel=1e-9
        )


def test_the_opening_guess_is_clipped_into_the_limits_and_an_explicit_start_is_kept():
    prof = make_profile()
    busy = constant_workload(500.0, 8)  # the simulator's guess for it is far above 6 replicas
    limits = [
        SafetyLimits(min_replicas=1, max_replicas=6),
        SafetyLimits(min_replicas=1, max_replicas=20),
    ]
    sim = ClusterSim(prof, [busy], batch=2, seed=0)
    guess = sim.ready.copy()
    fleet = ClampedFleet(sim, limits)
    fleet.start()
    assert guess[0] > 6 and sim.ready[0] == 6 and sim.ready[1] == min(guess[1], 20)
    assert np.array_equal(fleet.current, sim.ready)
    sim.reset(initial_replicas=9)
    fleet.start(clip=False)
    assert np.array_equal(fleet.current, [9, 9])
    fleet.step(np.array([30.0, 30.0]), now_s=15.0)
    assert np.array_equal(
        fleet.current, [6, 20]
    )  # the clamps bring it within each cluster's limits


def test_one_limits_object_per_cluster_is_required():
    sim = ClusterSim(make_profile(), [constant_workload(10.0, 4)], batch=3, seed=0)
    with pytest.raises(ValueError, match="2 limits for a batch of 3"):
        ClampedFleet(sim, [SafetyLimits(), SafetyLimits()])


class _Recorder(StaticPolicy):
    """A static fleet that records how many intervals each decision was shown."""

    def __init__(self, replicas: int) -> None:
        super().__init__(replicas)
        self.lengths: list[int] = []

    def decide(self, window):  # type: ignore[no-untyped-def]
        self.lengths.append(len(window))
        return super().decide(window)


def test_a_policy_sees_the_window_its_factory_reads_as_the_controller_serves_it():
    # A PPO checkpoint reads 12 intervals (`PolicyFactory.window`, as the controller's memory
    # keeps); the rollout once cut every history to 8, so the evaluator scored an observation
    # with 4 padded rows that the controller never shows.
    from rlscale.policies.registry import PolicyFactory

    prof = make_profile()
    w = constant_workload(40.0, 30)
    for declared, seen in ((12, 12), (3, 8)):
        pol = _Recorder(4)
        f = PolicyFactory(
            "static:4", "recorder", SafetyLimits(), lambda _s, p=pol: p, window=declared
        )
        rollout(f, prof, w, initial_replicas=4)
        assert max(pol.lengths) == seen
        assert pol.lengths[:seen] == list(range(1, seen + 1))  # the history there is, unpadded
