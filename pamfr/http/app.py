"""The routes of the HTTP port: /healthz, /readyz, /metrics, /fhir (pamfr/http/fhir.py) and
/events (pamfr/http/events.py).

The first three carry no patient data: readiness says which part is down and why (no SQL, no
values), the metrics only counts. Every other route is behind the access guard
(pamfr/http/access.py), and every request behind the Host check. Query strings are never
logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from pamfr.http.access import AccessGuard
from pamfr.settings.readiness import Readiness

if TYPE_CHECKING:
    from pamfr.desk.app import Desk

# What the daemon hands the port (service/health.Health's methods): the readiness checks run
# now, and the Prometheus text of its metrics.
ReadinessProbe = Callable[[], Awaitable[Readiness]]
Exposition = Callable[[], Awaitable[bytes]]


async def _to_desk(_request: Request) -> Response:
    return RedirectResponse("/desk/", status_code=307)


def build_app(
    readiness: ReadinessProbe | None,
    exposition: Exposition | None,
    *,
    fhir_engine: Engine | None = None,
    events_engine: Engine | None = None,
    tokens: Mapping[str, str] | None = None,
    anonymous: bool = False,
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "[::1]"),
    public_url: str = "",
    desk: Desk | None = None,
) -> Starlette:
    """The port's application: /healthz always; /readyz and /metrics with the daemon's
    `readiness` and `exposition`; /fhir when given a read engine (make_read_engine); /events
    when given the store's engine; /desk when given the desk (its own sign-in). `tokens`
    (name: token) guard every other route (`anonymous`: not for loopback clients); a Host
    header not among `hosts` gets 400; `public_url` ([http] public_url) is the base of FHIR's
    fullUrl and links."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        found = await readiness()
        return JSONResponse(found.as_json(), status_code=200 if found.ready else 503)

    async def prometheus(_request: Request) -> Response:
        return Response(await exposition(), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    if readiness is not None and exposition is not None:
        routes.append(Route("/readyz", readyz, methods=["GET"]))
        routes.append(Route("/metrics", prometheus, methods=["GET"]))
    if fhir_engine is not None:
        from pamfr.http.fhir import fhir_routes

        routes.append(Mount("/fhir", routes=fhir_routes(fhir_engine, public_url)))
    if events_engine is not None:
        from pamfr.http.events import event_routes

        routes += event_routes(events_engine)  # GET /events: the change feed
    if desk is not None:
        from pamfr.desk.app import build_desk

        routes.append(Route("/desk", _to_desk, methods=["GET"]))
        routes.append(Mount("/desk", app=build_desk(desk)))
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts), www_redirect=False),
            Middleware(AccessGuard, tokens=tokens, anonymous=anonymous),
        ],
    )
