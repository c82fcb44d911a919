"""Leader election on a Lease, walked as a timeline with an explicit clock."""

from __future__ import annotations

import threading
import time

from rlscale.deploy.leader import LeaderElector, LeaderLoop
from rlscale.deploy.retry import TemporaryError
from tests.deploy.fakes import T0, FakeKube


def elector(api: FakeKube, identity: str, **kw) -> LeaderElector:
    return LeaderElector(
        api,
        "llm",
        "rlscale-controller",
        identity,
        lease_duration_s=15,
        renew_deadline_s=10,
        retry_period_s=2,
        **kw,
    )


def holder(api: FakeKube) -> str:
    return api.leases[("llm", "rlscale-controller")]["spec"]["holderIdentity"]


def test_the_first_candidate_creates_the_lease_and_leads() -> None:
    api = FakeKube()
    a = elector(api, "a")
    assert a.step(T0) and a.is_leader(T0)
    spec = api.leases[("llm", "rlscale-controller")]["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == (
        "a",
        15,
        0,
    )


def test_a_second_candidate_waits_while_the_leader_renews() -> None:
    api = FakeKube()
    a, b = elector(api, "a"), elector(api, "b")
    a.step(T0)
    for t in range(0, 60, 2):
        assert a.step(T0 + t)
        assert not b.step(T0 + t + 1)
    assert holder(api) == "a"


def test_only_one_of_two_racing_candidates_wins() -> None:
    api = FakeKube()
    a, b = elector(api, "a"), elector(api, "b")
    a.step(T0)
    b.step(T0 + 1)

    class StaleRead:
        """c read the Lease just before b wrote it: c's write carries the old resourceVersion."""

        def __init__(self) -> None:
            self.snapshot = api.get_lease("llm", "rlscale-controller")

        def get_lease(self, ns: str, name: str) -> dict:
            return self.snapshot

        def __getattr__(self, name: str):
            return getattr(api, name)

    c = elector(StaleRead(), "c")  # type: ignore[arg-type]
    c.step(T0 + 1)
    assert b.step(T0 + 17)  # expired for b: b takes it
    assert not c.step(T0 + 17)  # expired for c too, but its write is a 409
    assert holder(api) == "b"
    assert api.requests[-1].op == "replace_lease"


def test_a_leader_that_cannot_renew_stops_acting_before_anyone_takes_over() -> None:
    api = FakeKube()
    a, b = elector(api, "a"), elector(api, "b")
    assert a.step(T0)
    assert not b.step(T0 + 1)  # b sees a's record at T0 + 1
    api.fail("get_lease", *[TemporaryError("500")] * 20)
    assert a.step(T0 + 2)  # still within the renew deadline of its T0 renewal
    assert not a.step(T0 + 10)  # 10 s without a renewal: no longer the leader
    assert not a.is_leader(T0 + 10)
    api._failures.clear()
    assert not b.step(T0 + 15)  # 14 s after b saw the record: not yet expired
    assert b.step(T0 + 16)  # 15 s: b takes over; a stopped acting 6 s earlier
    spec = api.leases[("llm", "rlscale-controller")]["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)


def test_expiry_is_judged_by_the_local_clock_not_the_holders_timestamps() -> None:
    api = FakeKube()
    a, b = elector(api, "a"), elector(api, "b")
    a.step(T0)
    api.leases[("llm", "rlscale-controller")]["spec"]["renewTime"] = (
        "2001-01-01T00:00:00.000000Z"  # skewed clock
    )
    assert not b.step(T0 + 1)  # first sight of the record: b waits a full lease duration
    assert not b.step(T0 + 15)
    assert b.step(T0 + 16.5)


def test_release_lets_a_standby_take_over_at_once() -> None:
    api = FakeKube()
    a, b = elector(api, "a"), elector(api, "b")
    a.step(T0)
    assert not b.step(T0 + 1)
    assert a.release(T0 + 2)
    assert not a.is_leader(T0 + 2)
    assert holder(api) == ""
    assert b.step(T0 + 3)


def test_release_by_a_non_leader_writes_nothing() -> None:
    api = FakeKube()
    a, b = elector(api, "a"), elector(api, "b")
    a.step(T0)
    b.step(T0 + 1)
    n = len(api.writes())
    assert not b.release(T0 + 2)
    assert len(api.writes()) == n and holder(api) == "a"


def test_leadership_changes_are_reported() -> None:
    api = FakeKube()
    seen: list[bool] = []
    a = elector(api, "a", on_change=seen.append)
    a.step(T0)
    a.step(T0 + 2)
    api.fail("get_lease", *[TemporaryError("500")] * 10)
    a.step(T0 + 12)
    assert seen == [True, False]


def test_the_loop_thread_elects_and_releases_on_stop() -> None:
    api = FakeKube()
    e = LeaderElector(
        api,
        "llm",
        "rlscale-controller",
        "a",
        lease_duration_s=3,
        renew_deadline_s=2,
        retry_period_s=0.05,
    )
    loop = LeaderLoop(e).start()
    try:
        deadline = time.monotonic() + 5
        while not e.is_leader(time.time()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert e.is_leader(time.time())
    finally:
        loop.stop(release=True)
    assert holder(api) == ""
    assert not any(t.name == "rlscale-leader" for t in threading.enumerate())
