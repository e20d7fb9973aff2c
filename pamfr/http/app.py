"""The routes of the HTTP port: /healthz, /readyz, /metrics, /events (pamfr/http/events.py).

Their answers carry no patient data: readiness says which part is down and why (no SQL, no
values), the metrics only counts. Query strings are ignored and never logged.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pamfr.health import Health
from pamfr.http.events import event_routes
from pamfr.metrics import Metrics


def build_app(health: Health, metrics: Metrics) -> Starlette:
    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        readiness = await health.readiness()
        return JSONResponse(readiness.as_json(), status_code=200 if readiness.ready else 503)

    async def prometheus(_request: Request) -> Response:
        _, counts = await asyncio.gather(health.readiness(), health.identity_counts())
        if counts is not None:
            metrics.identities = counts.by_status
            metrics.ins_collisions = counts.ins_collisions
        else:  # the store did not answer: no figure rather than a stale one
            metrics.identities = None
            metrics.ins_collisions = None
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
            *event_routes(health.engine),  # GET /events: the change feed
        ]
    )
