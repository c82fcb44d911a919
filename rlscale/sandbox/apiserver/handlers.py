"""The REST endpoints: paths, verbs, query parameters and content types as the apiserver has them.

    GET    /api/v1/namespaces/{ns}/pods?labelSelector=&fieldSelector=&limit=&continue=   list
    GET    ...?watch=true&resourceVersion=N&timeoutSeconds=S                            watch
    POST   /apis/apps/v1/namespaces/{ns}/deployments                                    create
    GET|PUT|PATCH|DELETE  .../deployments/{name}                                        object
    GET|PUT|PATCH         .../deployments/{name}/scale   (autoscaling/v1 Scale)         subresource
    GET|PUT|PATCH         .../deployments/{name}/status, .../pods/{name}/status
    GET    /api/v1/pods, /apis/apps/v1/deployments, ...                                 all namespaces
    GET    /api/v1/nodes, /api/v1/nodes/{name}   (cluster-scoped, read-only: the node pool's)

Writes accept `?dryRun=All` (validated, not stored). Responses are `application/json`, or a
`meta.k8s.io/v1 Table` when the Accept header asks for one (kubectl get).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from rlscale.sandbox.apiserver import discovery, tables
from rlscale.sandbox.apiserver import status as st
from rlscale.sandbox.apiserver.patch import APPLY_PATCH_YAML, SUPPORTED
from rlscale.sandbox.apiserver.resources import (
    BY_KEY,
    EVENTS,
    PODS,
    SCALE_GROUP,
    SCALE_KIND,
    SCALE_VERSION,
    Obj,
    ResourceType,
    scale_selector,
)
from rlscale.sandbox.apiserver.selectors import FieldSelector, LabelSelector
from rlscale.sandbox.apiserver.store import Store

JSON = "application/json"

_FIELD_LABELS: dict[tuple[str, str], tuple[str, ...]] = {
    PODS.key: ("metadata.name", "metadata.namespace", "status.phase", "spec.nodeName"),
    EVENTS.key: (
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.namespace",
        "involvedObject.uid",
        "reason",
        "type",
    ),
}


@dataclass(frozen=True)
class Target:
    """What a request path names."""

    resource: ResourceType
    namespace: str | None  # None: across all namespaces (list/watch only)
    name: str | None = None
    subresource: str | None = None


@dataclass(frozen=True)
class Representation:
    table: bool = False
    table_api_version: str = "meta.k8s.io/v1"


def negotiate(accept: str | None) -> Representation:
    """Pick JSON or Table from an Accept header; 406 if it allows neither."""
    if not accept or not accept.strip():
        return Representation()
    for entry in accept.split(","):
        parts = [p.strip() for p in entry.split(";")]
        media = parts[0].lower()
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        params.pop("q", None)
        as_ = params.get("as")
        if (
            media == JSON
            and as_ == "Table"
            and params.get("g") == "meta.k8s.io"
            and params.get("v") in ("v1", "v1beta1")
        ):
            return Representation(True, f"meta.k8s.io/{params['v']}")
        if as_:
            continue
        if media in (JSON, "*/*", "application/*"):
            return Representation()
    raise st.not_acceptable(accept)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=JSON)


class Handlers:
    def __init__(self, store: Store, server_address: str) -> None:
        self.store = store
        self.server_address = server_address
        self.stopping = asyncio.Event()

    # routing ---------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return json_response(discovery.version())
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                return json_response(discovery.api_versions(self.server_address))
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"]:
            if len(parts) == 1:
                return json_response(discovery.api_group_list())
            if len(parts) == 2:
                if parts[1] not in discovery.GROUP_VERSIONS:
                    raise _path_not_found()
                return json_response(discovery.api_group(parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _path_not_found()
        if not rest:
            doc = discovery.resource_list(group, version)
            if doc is None:
                raise _path_not_found()
            return json_response(doc)
        target = _resolve(group, version, rest)
        return await self._serve(request, target)

    async def _serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        q = request.query
        if method != "GET" and "patch" not in t.resource.verbs:
            raise st.method_not_allowed()  # a read-only kind (nodes)
        if t.name is None:
            if method == "GET":
                if q.get("watch") in ("true", "1"):
                    return await self._watch(request, t)
                return self._list(request, t)
            if method == "POST" and t.namespace is not None:
                return json_response(
                    self.store.create(
                        t.resource, t.namespace, await _body(request), dry_run=_dry(q)
                    ),
                    201,
                )
            raise st.method_not_allowed()
        ns = t.namespace or ""
        if t.subresource == "scale":
            return await self._scale(request, t)
        if method == "GET":
            return self._respond(request, t.resource, self.store.get(t.resource, ns, t.name))
        if method == "PUT":
            obj = self.store.update(
                t.resource,
                ns,
                t.name,
                await _body(request),
                subresource=t.subresource,
                dry_run=_dry(q),
            )
            return json_response(obj)
        if method == "PATCH":
            content_type, patch = await _patch_body(request)
            obj = self.store.patch(
                t.resource,
                ns,
                t.name,
                content_type,
                patch,
                subresource=t.subresource,
                dry_run=_dry(q),
            )
            return json_response(obj)
        if method == "DELETE" and t.subresource is None:
            options = await _body(request, optional=True) or {}
            grace = q.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
            obj, removed = self.store.delete(
                t.resource,
                ns,
                t.name,
                grace_period_s=None if grace is None else int(grace),
                preconditions=options.get("preconditions"),
                dry_run=_dry(q) or options.get("dryRun") == ["All"],
            )
            if removed and not t.resource.return_deleted_object:
                details = {"name": t.name, "kind": t.resource.plural, "uid": obj["metadata"]["uid"]}
                if t.resource.group:
                    details["group"] = t.resource.group
                return json_response(st.success_status(details))
            return json_response(obj)
        raise st.method_not_allowed()

    # list and watch --------------------------------------------------------------------
    def _selectors(
        self, request: web.Request, rt: ResourceType
    ) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = LabelSelector.parse(request.query.get("labelSelector"))
            fields = FieldSelector.parse(
                request.query.get("fieldSelector"),
                _FIELD_LABELS.get(rt.key, ("metadata.name", "metadata.namespace")),
            )
        except ValueError as e:
            raise st.bad_request(f"unable to parse requirement: {e}") from None
        return labels, fields

    def _list(self, request: web.Request, t: Target) -> web.Response:
        rep = negotiate(request.headers.get("Accept"))
        labels, fields = self._selectors(request, t.resource)
        items = self.store.list(t.resource, t.namespace, labels, fields)
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        token = request.query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                start_key, list_rv = tuple(state["start"]), int(state["rv"])
            except (ValueError, KeyError, TypeError):
                raise st.bad_request("continue key is not valid") from None
            if list_rv < self.store.compacted_rv:
                raise st.ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter.",
                )
            items = [o for o in items if _key(o) > start_key]
        limit = int(request.query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            state = {"start": list(_key(items[-1])), "rv": self.store.rv}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            meta["remainingItemCount"] = rest
        if rep.table:
            body = tables.table(
                t.resource,
                items,
                api_version=rep.table_api_version,
                resource_version=meta["resourceVersion"],
                include_object=request.query.get("includeObject", "Metadata"),
            )
            body["metadata"] = meta
            return json_response(body)
        for item in items:
            # The apiserver leaves kind/apiVersion off the items of a list.
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return json_response(
            {
                "kind": t.resource.list_kind,
                "apiVersion": t.resource.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        rep = negotiate(request.headers.get("Accept"))
        labels, fields = self._selectors(request, t.resource)
        timeout = request.query.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        include = request.query.get("includeObject", "Metadata")
        response = web.StreamResponse(
            status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        try:
            watcher = self.store.watch(
                t.resource, t.namespace, request.query.get("resourceVersion"), labels, fields
            )
        except st.ApiError as e:
            if e.code != 410:
                raise
            # The apiserver answers 200 and sends the 410 as an ERROR event on the stream.
            await response.prepare(request)
            await response.write(
                (json.dumps({"type": "ERROR", "object": e.status()}) + "\n").encode()
            )
            await response.write_eof()
            return response
        await response.prepare(request)
        first = True
        try:
            while not self.stopping.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=remaining)
                except TimeoutError:
                    break
                if item is None:
                    break
                kind, obj = item
                if rep.table:
                    obj = tables.table(
                        t.resource,
                        [obj],
                        api_version=rep.table_api_version,
                        resource_version=obj["metadata"].get("resourceVersion"),
                        include_object=include,
                        with_columns=first,
                    )
                first = False
                await response.write((json.dumps({"type": kind, "object": obj}) + "\n").encode())
        except (ConnectionResetError, asyncio.CancelledError):
            self.store.stop_watch(watcher)
            raise
        self.store.stop_watch(watcher)
        await response.write_eof()
        return response

    # scale subresource -----------------------------------------------------------------
    async def _scale(self, request: web.Request, t: Target) -> web.Response:
        rt, ns, name = t.resource, t.namespace or "", t.name or ""
        deployment = self.store.get(rt, ns, name)
        if request.method == "GET":
            return json_response(to_scale(deployment))
        if request.method == "PUT":
            scale = await _body(request)
            if not isinstance(scale, dict):
                raise st.bad_request("the body of the request is not a JSON object")
            sent_name = (scale.get("metadata") or {}).get("name")
            if sent_name not in (None, name):
                raise st.bad_request(
                    f"the name of the object ({sent_name}) does not match the name on the URL ({name})"
                )
            sent_rv = (scale.get("metadata") or {}).get("resourceVersion")
            if (
                sent_rv not in (None, "")
                and str(sent_rv) != deployment["metadata"]["resourceVersion"]
            ):
                raise st.conflict(rt.plural, rt.group, name)
        elif request.method == "PATCH":
            content_type, patch = await _patch_body(request)
            scale = self.store.apply_patch_to(rt, name, content_type, to_scale(deployment), patch)
        else:
            raise st.method_not_allowed()
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        causes = rt_validate_scale(replicas)
        if causes:
            raise st.invalid(SCALE_KIND, SCALE_GROUP, name, causes)
        deployment["spec"]["replicas"] = replicas
        updated = self.store.update(rt, ns, name, deployment, dry_run=_dry(request.query))
        return json_response(to_scale(updated))

    def _respond(self, request: web.Request, rt: ResourceType, obj: Obj) -> web.Response:
        rep = negotiate(request.headers.get("Accept"))
        if rep.table:
            return json_response(
                tables.table(
                    rt,
                    [obj],
                    api_version=rep.table_api_version,
                    resource_version=obj["metadata"].get("resourceVersion"),
                    include_object=request.query.get("includeObject", "Metadata"),
                )
            )
        return json_response(obj)


def rt_validate_scale(replicas: Any) -> list[st.Cause]:
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        return [st.field_invalid("spec.replicas", replicas, "must be an integer")]
    if replicas < 0:
        return [st.field_invalid("spec.replicas", replicas, "must be greater than or equal to 0")]
    return []


def to_scale(deployment: Obj) -> Obj:
    """The autoscaling/v1 Scale view of a Deployment."""
    meta = deployment["metadata"]
    status: dict[str, Any] = {"selector": scale_selector(deployment)}
    if (deployment.get("status") or {}).get("replicas"):
        status = {"replicas": deployment["status"]["replicas"], **status}
    return {
        "kind": SCALE_KIND,
        "apiVersion": f"{SCALE_GROUP}/{SCALE_VERSION}",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (deployment.get("spec") or {}).get("replicas", 0)},
        "status": status,
    }


def _resolve(group: str, version: str, rest: list[str]) -> Target:
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    rt = BY_KEY.get((group, rest[0]))
    if rt is None or rt.version != version:
        raise _path_not_found()
    if rt.namespaced and namespace is None and len(rest) > 1:
        raise _path_not_found()  # a namespaced kind's object needs its namespace
    if not rt.namespaced and namespace is not None:
        raise _path_not_found()  # and a cluster-scoped kind (nodes) has none
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if len(rest) > 3 or (sub is not None and sub not in rt.subresources):
        raise _path_not_found()
    return Target(rt, namespace, name, sub)


def _path_not_found() -> st.ApiError:
    return st.ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace", ""), meta.get("name", ""))


def _dry(query: Any) -> bool:
    values = query.getall("dryRun", []) if hasattr(query, "getall") else []
    for v in values:
        if v != "All":
            raise st.bad_request(f'dryRun: Unsupported value: "{v}": supported values: "All"')
    return bool(values)


async def _body(request: web.Request, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise st.bad_request("the body of the request is empty")
    ctype = request.content_type
    if ctype not in (JSON, "application/octet-stream", "text/plain", "") and not optional:
        raise st.unsupported_media_type(ctype, [JSON])
    try:
        return json.loads(raw)
    except ValueError:
        raise st.bad_request("the body of the request could not be decoded as JSON") from None


async def _patch_body(request: web.Request) -> tuple[str, Any]:
    ctype = request.content_type
    if ctype == APPLY_PATCH_YAML or ctype not in SUPPORTED:
        # Server-side apply is not part of the stand-in.
        raise st.unsupported_media_type(ctype, list(SUPPORTED))
    raw = await request.read()
    try:
        return ctype, json.loads(raw)
    except ValueError:
        raise st.bad_request("the body of the request could not be decoded as JSON") from None
