"""GET /events?after=N&limit=M: the change feed, oldest first, resumable from any id.

Answer: {"events": [...], "next": <the last id returned, to pass as after; null when none
came>}. Bad parameters: 400 with {"error": reason}. The events carry identifiers and codes
only; the query string is not logged.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pamfr.feed.store import MAX_LIMIT, read_events

DEFAULT_LIMIT = 100
MAX_EVENT_ID = 2**63 - 1  # the event id column is a BIGINT


def _int(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,19}", raw.strip()):
        raise ValueError(f"{name} must be a whole number, got {raw[:40]!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def event_routes(reader: Engine) -> list[Route]:
    """The routes, reading the store with `reader` (store.db.make_read_engine) in a thread
    of their own."""
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pamfr-events-http")

    def page(after: int, limit: int) -> list[dict]:
        with reader.connect() as conn:
            return read_events(conn, after, limit)

    async def events(request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"after", "limit"})
        try:
            if unknown:
                raise ValueError(f"unknown parameter {unknown[0][:40]!r} (after, limit)")
            after = _int(request, "after", 0, 0, MAX_EVENT_ID)
            limit = _int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(pool, page, after, limit)
        except Exception as exc:  # the store does not answer: say so, no SQL
            return JSONResponse(
                {"error": f"the store did not answer: {type(exc).__name__}"}, status_code=503
            )
        return JSONResponse({"events": found, "next": found[-1]["id"] if found else None})

    return [Route("/events", events, methods=["GET"])]
