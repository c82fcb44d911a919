"""The stand-in apiserver as an aiohttp application on a free loopback port.

Middleware, outermost first: the request log (every request: method, path, query, content type,
status), bearer-token authentication, fault injection, and the translation of `ApiError` into a
`Status` body.

Authentication: a request with a wrong bearer token gets 401 Unauthorized. A request without one
is let through as anonymous unless `allow_anonymous=False`, because client-go (kubectl) applies a
kubeconfig's credentials only to https servers (clientcmd's `IsConfigTransportTLS` check) and the
stand-in speaks plain http on loopback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from aiohttp import web

from rlscale.sandbox.apiserver import status as st
from rlscale.sandbox.apiserver.faults import FaultInjector
from rlscale.sandbox.apiserver.handlers import Handlers, json_response
from rlscale.sandbox.apiserver.store import Store

_PUBLIC = ("/healthz", "/livez", "/readyz", "/version")
# The sandbox's own control endpoint (not Kubernetes): GET the fault rules, POST one rule (JSON
# with FaultRule's fields, or {"spec": "PATH[@METHODS]:KEY=VALUE,..."}), DELETE them all.
FAULTS_PATH = "/rlscale-sandbox/v1/faults"


@dataclass
class RequestRecord:
    """One request the API server received; logged when it arrives, `status` set when answered
    (so a watch that is still streaming is in the log with status None)."""

    time_s: float  # Unix time
    method: str
    path: str
    query: str
    content_type: str  # of the request body, "" if none
    status: int | None  # None: not answered yet, or the connection was dropped or broken
    user_agent: str = ""

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


class RequestLog:
    """Thread-safe, bounded record of requests (the oldest are dropped past `limit`)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._records: list[RequestRecord] = []
        self.lock = threading.Lock()
        self._limit = limit

    def append(self, record: RequestRecord) -> None:
        with self.lock:
            self._records.append(record)
            if len(self._records) > self._limit:
                del self._records[: len(self._records) - self._limit]

    def snapshot(self) -> list[RequestRecord]:
        with self.lock:
            return [replace(r) for r in self._records]

    def clear(self) -> None:
        with self.lock:
            self._records.clear()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiServer:
    def __init__(
        self,
        store: Store,
        *,
        token: str | None = None,
        allow_anonymous: bool = True,
        faults: FaultInjector | None = None,
        request_log: RequestLog | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.store = store
        self.token = token
        self.allow_anonymous = allow_anonymous
        self.faults = faults or FaultInjector()
        self.request_log = request_log or RequestLog()
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.handlers: Handlers | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the API server is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Start listening (on the event loop that will own the store)."""
        app = web.Application(
            middlewares=[self._log_mw, self._auth_mw, self._fault_mw, self._error_mw]
        )
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the port the OS picked for port 0
        self.handlers = Handlers(self.store, f"{self.host}:{self.port}")

    async def stop(self) -> None:
        if self.handlers is not None:
            self.handlers.stopping.set()
        self.store.close_all_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        assert self.handlers is not None
        if request.path == FAULTS_PATH:
            return await self._faults(request)
        return await self.handlers.dispatch(request)

    async def _faults(self, request: web.Request) -> web.StreamResponse:
        from rlscale.sandbox.apiserver.faults import FaultRule

        if request.method == "POST":
            doc = await request.json()
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object with a fault rule")
            if "spec" in doc:
                rule = FaultRule.parse(str(doc["spec"]))
            else:
                fields = dict(doc)
                fields["methods"] = tuple(str(m).upper() for m in fields.get("methods") or ())
                try:
                    rule = FaultRule(**fields)
                except TypeError as e:
                    raise ValueError(f"not a fault rule: {e}") from None
            self.faults.add(rule)
            return web.json_response(rule.to_dict(), status=201)
        if request.method == "DELETE":
            self.faults.clear()
        elif request.method != "GET":
            return web.json_response({"error": "use GET, POST or DELETE"}, status=405)
        return web.json_response({"rules": [r.to_dict() for r in self.faults.rules]})

    @web.middleware
    async def _log_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        record = RequestRecord(
            time_s=time.time(),
            method=request.method,
            path=request.path,
            query=request.query_string,
            content_type=request.headers.get("Content-Type", ""),
            status=None,
            user_agent=request.headers.get("User-Agent", ""),
        )
        self.request_log.append(record)
        response = await handler(request)
        with self.request_log.lock:
            record.status = response.status
        return response

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token and request.path not in _PUBLIC:
            sent = request.headers.get("Authorization")
            if (
                sent is None
                and not self.allow_anonymous
                or sent is not None
                and sent != f"Bearer {self.token}"
            ):
                return json_response(st.unauthorized().status(), 401)
        return await handler(request)

    @web.middleware
    async def _fault_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == FAULTS_PATH:  # the way to clear faults is never faulty
            return await handler(request)
        decision = self.faults.decide(request.method, request.path)
        if decision.latency_s > 0:
            await asyncio.sleep(decision.latency_s)
        if decision.drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError("fault injection: connection dropped")
        if decision.status == 500:
            return self._error(st.internal_error("injected fault"))
        if decision.status == 429:
            return self._error(st.too_many_requests(decision.retry_after_s))
        if decision.status == 409:
            return self._error(st.conflict("deployments", "apps", "injected", "injected fault"))
        if decision.lose:
            await handler(request)  # carried out (a write lands) ...
            if request.transport is not None:
                request.transport.abort()  # ... and its answer never arrives
            raise asyncio.CancelledError("fault injection: answer lost")
        return await handler(request)

    @web.middleware
    async def _error_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except st.ApiError as e:
            return self._error(e)
        except json.JSONDecodeError:
            return self._error(
                st.bad_request("the body of the request could not be decoded as JSON")
            )
        except ValueError as e:
            return self._error(st.bad_request(str(e)))

    @staticmethod
    def _error(e: st.ApiError) -> web.Response:
        response = json_response(e.status(), e.code)
        for k, v in e.headers.items():
            response.headers[k] = v
        return response
