"""The object store: what etcd plus the apiserver's generic registry do for the served kinds.

* One global `resourceVersion` counter: every write (create, update, status change, graceful
  delete, removal) takes the next number, so versions increase across all kinds, as etcd's
  revision does. List responses carry the current one.
* `uid`, `creationTimestamp`, `generation` (kinds that have one: bumped only when `spec` changes)
  are set by the server; a write cannot change them.
* Optimistic concurrency: an update carrying `metadata.resourceVersion` that is not the current one
  fails with 409 Conflict; a no-op update writes nothing and keeps the version, as the
  apiserver's GuaranteedUpdate does.
* A bounded history of change events for watches: a watch resumes from any version still in the
  history; one older than the history ("compacted") gets 410 Expired.

All methods are synchronous and must be called from the one event-loop thread that owns the
store (the handlers, the kubelet and the replay all run there), so no locks are needed.
"""

from __future__ import annotations

import asyncio
import copy
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rlscale.sandbox.apiserver import status as st
from rlscale.sandbox.apiserver.patch import PatchApplyError, PatchFormatError, apply_patch
from rlscale.sandbox.apiserver.resources import PODS, Obj, ResourceType, validate_name
from rlscale.sandbox.apiserver.selectors import FieldSelector, LabelSelector

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ChangeEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: ResourceType
    obj: Obj  # the object after the change (the last state for DELETED)
    prev: Obj | None  # the object before (None for ADDED)


class Watcher:
    """One open watch: filters change events and queues them as the apiserver would send them.

    An object that starts matching the selector arrives as ADDED, one that stops matching as
    DELETED (that is what a watch with a selector promises).
    """

    def __init__(
        self,
        resource: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue()
        self.closed = False

    def _matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def translate(self, event: ChangeEvent) -> tuple[str, Obj] | None:
        if event.resource.key != self.resource.key:
            return None
        now = self._matches(event.obj)
        before = self._matches(event.prev)
        if event.type == "DELETED":
            return ("DELETED", event.obj) if now else None
        if now and before:
            return ("MODIFIED", event.obj)
        if now:
            return ("ADDED", event.obj)
        if before:
            return ("DELETED", event.obj)
        return None

    def offer(self, event: ChangeEvent) -> None:
        if self.closed:
            return
        item = self.translate(event)
        if item is not None:
            self.queue.put_nowait(item)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class Store:
    def __init__(
        self,
        *,
        history_limit: int = 1000,
        seed: int = 0,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rv = 0
        self.objects: dict[tuple[tuple[str, str], str, str], Obj] = {}
        self.history: deque[ChangeEvent] = deque()
        self.history_limit = history_limit
        self.compacted_rv = 0  # newest version dropped from the history
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[ChangeEvent], None]] = []
        self.wall_clock = wall_clock
        self._rng = random.Random(seed)

    # reads -----------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.objects.get((rt.key, namespace, name))
        if obj is None:
            raise st.not_found(rt.plural, rt.group, name)
        return copy.deepcopy(obj)

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        obj = self.objects.get((rt.key, namespace, name))
        return None if obj is None else copy.deepcopy(obj)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> list[Obj]:
        labels = labels or LabelSelector()
        fields = fields or FieldSelector()
        out = []
        for (key, ns, _name), obj in sorted(
            self.objects.items(), key=lambda kv: (kv[0][1], kv[0][2])
        ):
            if key != rt.key or (namespace is not None and ns != namespace):
                continue
            if labels.matches(obj["metadata"].get("labels")) and fields.matches(obj):
                out.append(copy.deepcopy(obj))
        return out

    # writes ----------------------------------------------------------------------------
    def create(
        self, rt: ResourceType, namespace: str | None, body: Obj, *, dry_run: bool = False
    ) -> Obj:
        if not isinstance(body, dict):
            raise st.bad_request("the body of the request is not a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise st.bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise st.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(100):
                candidate = meta["generateName"] + "".join(
                    self._rng.choice(_NAME_ALPHABET) for _ in range(5)
                )
                if (rt.key, namespace or "", candidate) not in self.objects:
                    meta["name"] = candidate
                    break
        name = meta.get("name") or ""
        name_causes = validate_name(name)
        if name_causes:
            raise st.invalid(rt.kind, rt.group, name, name_causes)
        if (rt.key, namespace or "", name) in self.objects:
            raise st.already_exists(rt.plural, rt.group, name)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        for system in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(system, None)
        meta["uid"] = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        meta["creationTimestamp"] = rfc3339(self.wall_clock())
        if rt.has_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        rt.default(obj)
        causes = rt.validate(obj)
        if causes:
            raise st.invalid(rt.kind, rt.group, name, causes)
        if dry_run:
            meta["resourceVersion"] = str(self.rv)
            return obj
        self._write(rt, obj, None, "ADDED")
        return copy.deepcopy(obj)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT of the object (`subresource=None`) or of its status (`"status"`)."""
        if not isinstance(body, dict):
            raise st.bad_request("the body of the request is not a JSON object")
        current = self.objects.get((rt.key, namespace, name))
        if current is None:
            raise st.not_found(rt.plural, rt.group, name)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise st.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise st.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        sent_rv = meta.get("resourceVersion")
        if sent_rv in (None, ""):
            if not rt.allow_unconditional_update:
                raise st.invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        st.field_invalid(
                            "metadata.resourceVersion", 0, "must be specified for an update"
                        )
                    ],
                )
        elif str(sent_rv) != current["metadata"]["resourceVersion"]:
            raise st.conflict(rt.plural, rt.group, name)
        new = copy.deepcopy(body)
        new_meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        new_meta["name"] = name
        if rt.namespaced:
            new_meta["namespace"] = namespace
        for system in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if system in old_meta:
                new_meta[system] = old_meta[system]
            else:
                new_meta.pop(system, None)
        new["kind"], new["apiVersion"] = rt.kind, rt.api_version
        if subresource == "status":
            # The status endpoint changes only status (and the kubelet's/controller's view of it).
            if "spec" in current:
                new["spec"] = copy.deepcopy(current["spec"])
            else:
                new.pop("spec", None)
            for kept in ("labels", "annotations", "ownerReferences", "finalizers"):
                if kept in old_meta:
                    new_meta[kept] = copy.deepcopy(old_meta[kept])
                else:
                    new_meta.pop(kept, None)
        elif "status" in current and "status" in rt.subresources:
            # A write to the main resource cannot change status.
            new["status"] = copy.deepcopy(current["status"])
        rt.default(new)
        causes = rt.validate(new)
        if causes:
            raise st.invalid(rt.kind, rt.group, name, causes)
        if rt.has_generation and new.get("spec") != current.get("spec"):
            new_meta["generation"] = int(old_meta.get("generation", 0)) + 1
        new_meta["resourceVersion"] = old_meta["resourceVersion"]
        if new == current or dry_run:
            return copy.deepcopy(new)
        self._write(rt, new, current, "MODIFIED")
        return copy.deepcopy(new)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        current = self.get(rt, namespace, name)
        patched = self.apply_patch_to(rt, name, content_type, current, patch)
        return self.update(rt, namespace, name, patched, subresource=subresource, dry_run=dry_run)

    @staticmethod
    def apply_patch_to(
        rt: ResourceType, name: str, content_type: str, current: Obj, patch: Any
    ) -> Obj:
        """Apply a patch, then check the version it carries: a patch that sets
        `metadata.resourceVersion` is a precondition, and a stale one is a 409 Conflict."""
        try:
            patched = apply_patch(content_type, current, patch)
        except PatchFormatError as e:
            raise st.bad_request(str(e)) from None
        except PatchApplyError as e:
            raise st.unprocessable(str(e)) from None
        sent = (patched.get("metadata") or {}).get("resourceVersion")
        have = (current.get("metadata") or {}).get("resourceVersion")
        if sent is not None and str(sent) != str(have):
            raise st.conflict(rt.plural, rt.group, name)
        patched.setdefault("metadata", {})["resourceVersion"] = have
        return patched

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        grace_period_s: int | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Returns (object, removed now). Pods are deleted gracefully: they get
        `deletionTimestamp` and stay until the kubelet removes them (or at once with grace 0)."""
        current = self.objects.get((rt.key, namespace, name))
        if current is None:
            raise st.not_found(rt.plural, rt.group, name)
        meta = current["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise st.conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta["resourceVersion"]:
            raise st.conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        if rt.key == PODS.key:
            grace = grace_period_s
            if grace is None:
                grace = int(current.get("spec", {}).get("terminationGracePeriodSeconds", 30))
            if grace > 0:
                if (
                    meta.get("deletionTimestamp")
                    and int(meta.get("deletionGracePeriodSeconds", 0)) <= grace
                ):
                    return copy.deepcopy(current), False
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = rfc3339(
                    self.wall_clock() + timedelta(seconds=grace)
                )
                new["metadata"]["deletionGracePeriodSeconds"] = grace
                if dry_run:
                    return new, False
                self._write(rt, new, current, "MODIFIED")
                return copy.deepcopy(new), False
        if dry_run:
            return copy.deepcopy(current), True
        return self.remove(rt, namespace, name), True

    def remove(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        """Remove at once (the end of a graceful pod deletion, or a kind without one)."""
        current = self.objects[(rt.key, namespace, name)]
        last = copy.deepcopy(current)
        self.rv += 1
        last["metadata"]["resourceVersion"] = str(self.rv)
        del self.objects[(rt.key, namespace, name)]
        self._record(ChangeEvent(self.rv, "DELETED", rt, last, current))
        return copy.deepcopy(last)

    def mutate(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        fn: Callable[[Obj], None],
        *,
        subresource: str | None = "status",
    ) -> Obj | None:
        """Read-modify-write for the simulated controllers: `fn` edits a copy in place. Returns
        the object after the write, or None if it is gone."""
        current = self.find(rt, namespace, name)
        if current is None:
            return None
        fn(current)
        return self.update(rt, namespace, name, current, subresource=subresource)

    def _write(self, rt: ResourceType, obj: Obj, prev: Obj | None, kind: str) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        meta = obj["metadata"]
        self.objects[(rt.key, meta.get("namespace", ""), meta["name"])] = obj
        self._record(
            ChangeEvent(
                self.rv, kind, rt, copy.deepcopy(obj), copy.deepcopy(prev) if prev else None
            )
        )

    def _record(self, event: ChangeEvent) -> None:
        self.history.append(event)
        while len(self.history) > self.history_limit:
            self.compacted_rv = self.history.popleft().rv
        for w in list(self.watchers):
            w.offer(event)
        for listener in list(self.listeners):
            listener(event)

    # watch -----------------------------------------------------------------------------
    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        resource_version: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> Watcher:
        """Open a watch. With no version (or "0") it starts with a synthetic ADDED per existing
        object, like the apiserver; with a version it replays the history after it, and raises
        410 Expired when that part of the history is gone."""
        watcher = Watcher(rt, namespace, labels, fields)
        if resource_version in (None, "", "0"):
            for obj in self.list(rt, namespace, labels, fields):
                watcher.queue.put_nowait(("ADDED", obj))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise st.bad_request(f"invalid resource version: {resource_version}") from None
            if since < self.compacted_rv:
                oldest = self.history[0].rv - 1 if self.history else self.rv
                raise st.expired(since, oldest)
            for event in self.history:
                if event.rv > since:
                    watcher.offer(event)
        self.watchers.add(watcher)
        return watcher

    def stop_watch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)
        watcher.close()

    def close_all_watches(self) -> None:
        for w in list(self.watchers):
            self.stop_watch(w)
