"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's `leaderelection` does it, with
the clock passed in so tests can walk a timeline.

Why not the official client's `leaderelection` module: it uses the global default client, sleeps
on the wall clock, and never elects with sub-second timings; ours is `step(now_s)`.

The algorithm (client-go `tryAcquireOrRenew`):

1. read the Lease; if there is none, create it holding it (a 409 AlreadyExists: someone won).
2. remember when *we* first saw its current record (holder, renewTime): expiry is judged by our
   own clock from that moment, never by the holder's timestamps, so clock skew between
   machines does not matter.
3. if another identity holds it and we saw its record less than `lease_duration_s` ago, we are
   not the leader.
4. otherwise write ourselves in (renewTime = now; acquireTime and leaseTransitions change on a
   takeover) with the resourceVersion read: of two candidates, one wins, the other gets 409.

`is_leader(now_s)` is true only until `renew_deadline_s` after our last successful renewal. A
standby takes over no sooner than `lease_duration_s` after it last saw that renewal, so with
renew_deadline < lease_duration the old leader has stopped writing before a new one starts
(the controller checks `is_leader` right before every write).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rlscale.deploy.kube import KubeApi, Obj, rfc3339_micro
from rlscale.deploy.retry import ConflictError, ControllerError, NotFoundError

log = logging.getLogger("rlscale.deploy")


@dataclass
class LeaderElector:
    api: KubeApi
    namespace: str
    name: str
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    on_change: Callable[[bool], None] | None = None

    def __post_init__(self) -> None:
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) of the record we saw
        self._observed_at_s = -math.inf
        self._renewed_at_s: float | None = None
        self._leader = False
        self._lock = threading.Lock()
        self.last_error: str | None = None

    # -- state ---------------------------------------------------------------------------------
    def is_leader(self, now_s: float) -> bool:
        with self._lock:
            return (
                self._renewed_at_s is not None
                and now_s - self._renewed_at_s < self.renew_deadline_s
            )

    def _set_leader(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            log.info(
                "leadership " + ("acquired" if leader else "lost"),
                extra={
                    "fields": {"identity": self.identity, "lease": f"{self.namespace}/{self.name}"}
                },
            )
            if self.on_change is not None:
                self.on_change(leader)

    # -- one round -------------------------------------------------------------------------------
    def step(self, now_s: float) -> bool:
        """One acquire-or-renew attempt at `now_s`; returns whether we lead afterwards."""
        try:
            won = self._try(now_s)
            self.last_error = None
        except ControllerError as e:
            self.last_error = str(e)
            won = False
        with self._lock:
            if won:
                self._renewed_at_s = now_s
        leader = self.is_leader(now_s)
        self._set_leader(leader)
        return leader

    def _spec(self, now_s: float, current: Obj | None) -> Obj:
        spec = dict((current or {}).get("spec") or {})
        holder = spec.get("holderIdentity")
        if holder != self.identity:
            spec["acquireTime"] = rfc3339_micro(now_s)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = max(1, int(math.ceil(self.lease_duration_s)))
        spec["renewTime"] = rfc3339_micro(now_s)
        return spec

    def _body(self, spec: Obj, current: Obj | None = None) -> Obj:
        """A Lease object; with `current`, carrying its resourceVersion so a stale write gets 409."""
        meta: Obj = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            meta["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    def _try(self, now_s: float) -> bool:
        try:
            lease = self.api.get_lease(self.namespace, self.name)
        except NotFoundError:
            body = self._body({**self._spec(now_s, None), "leaseTransitions": 0})
            try:
                self.api.create_lease(self.namespace, body)
            except ConflictError:
                return False  # created by another candidate in between
            return True
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed = record
            self._observed_at_s = now_s
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        if holder and holder != self.identity and now_s < self._observed_at_s + duration:
            return False
        body = self._body(self._spec(now_s, lease), lease)
        try:
            out = self.api.replace_lease(self.namespace, self.name, body)
        except ConflictError:
            return False
        spec = out.get("spec") or body["spec"]
        self._observed = (self.identity, str(spec.get("renewTime") or ""))
        self._observed_at_s = now_s
        return True

    def release(self, now_s: float) -> bool:
        """Give the Lease up (holder cleared, 1 s duration) so a standby takes over at once, as
        client-go's ReleaseOnCancel; only if we hold it."""
        with self._lock:
            held = self._renewed_at_s is not None
            self._renewed_at_s = None
        self._set_leader(False)
        if not held:
            return False
        try:
            lease = self.api.get_lease(self.namespace, self.name)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return False
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=rfc3339_micro(now_s))
            self.api.replace_lease(self.namespace, self.name, self._body(spec, lease))
            return True
        except ControllerError as e:
            log.warning("lease not released", extra={"fields": {"error": str(e)}})
            return False


class LeaderLoop:
    """Runs `elector.step(clock())` every `retry_period_s` on a thread until `stop()`."""

    def __init__(self, elector: LeaderElector, clock: Callable[[], float] = time.time) -> None:
        self.elector = elector
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rlscale-leader", daemon=True)

    def start(self) -> LeaderLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.elector.step(self.clock())
            self._stop.wait(self.elector.retry_period_s)

    def stop(self, release: bool = True, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if release:
            self.elector.release(self.clock())
