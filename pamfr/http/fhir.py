"""The FHIR R4 read API of the stored identities, under /fhir (FR Core Patient).

GET /fhir/metadata, /fhir/Patient/{id}, /fhir/Patient?..., /fhir/Patient/{id}/_history and
/fhir/Patient/{id}/_history/{vid}. The endpoints are plain functions: Starlette runs them in
its thread pool, so the database is never asked on the event loop. Errors are
OperationOutcome resources; docs/fhir.md has the mapping and the versionId convention.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pamfr.fhir.patient import search_token, sexes_for
from pamfr.fhir.rest import SEARCH_PARAMS, bundle, capability_statement, operation_outcome
from pamfr.fhirread.patient import version_resource
from pamfr.http.access import FHIR_JSON
from pamfr.identity.names import fold
from pamfr.store.fhirquery import (
    IdentifierCriterion,
    PatientCriteria,
    current_version,
    find_version,
    patient_versions,
    reading,
    search_page,
)

DEFAULT_COUNT = 20
MAX_COUNT = 100
# Parameters a search accepts besides the search parameters themselves.
CONTROL_PARAMS = ("_count", "_cursor", "_format")
_FORMATS = {"json", "application/json", "application/fhir+json"}
_ID = re.compile(r"[0-9]{1,18}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DATE = re.compile(r"(eq)?([0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?)")


class FhirResponse(Response):
    media_type = FHIR_JSON
    charset = "utf-8"

    def __init__(self, content: Any, status_code: int = 200, etag: str | None = None) -> None:
        headers = {"ETag": f'W/"{etag}"'} if etag is not None else None
        super().__init__(
            json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
            status_code=status_code,
            headers=headers,
        )


class BadRequest(ValueError):
    pass


def _outcome(status: int, code: str, text: str) -> FhirResponse:
    return FhirResponse(operation_outcome(code, text), status)


def _not_found(what: str) -> FhirResponse:
    return _outcome(404, "not-found", f"{what} is not known")


def _software_version() -> str:
    try:
        return version("pamfr")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def _patient_id(raw: str) -> int | None:
    return int(raw) if _ID.fullmatch(raw) else None


def _one(request: Request, name: str) -> str:
    values = request.query_params.getlist(name)
    if len(values) != 1:
        raise BadRequest(f"{name}: give it once")
    return values[0]


def _birth_date(raw: str) -> str:
    found = _DATE.fullmatch(raw.strip())
    if not found:
        raise BadRequest(
            f"birthdate: expected YYYY, YYYY-MM or YYYY-MM-DD (prefix eq only), got {raw!r}"
        )
    value = found.group(2)
    year, month, day = (value.split("-") + ["01", "01"])[:3]
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        raise BadRequest(f"birthdate: {value!r} is not a date") from None
    return value


def _identifier_tokens(raw: str) -> tuple[IdentifierCriterion, ...]:
    """identifier=: tokens separated by commas (any of them), each `system|value`, `|value`
    (no system: pamfr serves none), `system|` or `value`. A system pamfr never serves, or no
    system, matches nothing; BadRequest for an empty token."""
    tokens: list[IdentifierCriterion] = []
    for token in raw.split(","):
        system, sep, value = token.partition("|")
        if not sep:
            system, value = "", system
        value = value.strip()
        if not value and not system.strip():
            raise BadRequest(f"identifier: expected system|value, system| or value, got {raw!r}")
        if not sep:
            tokens.append(IdentifierCriterion(value))
            continue
        designated = search_token(system.strip()) if system.strip() else None
        if designated is not None:
            kind, key = designated
            tokens.append(IdentifierCriterion(value or None, kind, key))
    return tuple(tokens)


def _criteria(request: Request) -> PatientCriteria:
    """The search's criteria; BadRequest names what is wrong (an unknown parameter too)."""
    known = {name for name, _, _ in SEARCH_PARAMS} | set(CONTROL_PARAMS)
    for name in request.query_params:
        if name not in known:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise BadRequest(
                f"unknown or unsupported search parameter {shown!r} "
                f"(supported: {', '.join(sorted(known))})"
            )
    for name, value in request.query_params.multi_items():
        if _CONTROL.search(value):  # a NUL is refused by PostgreSQL: say so, not a 500
            raise BadRequest(f"{name}: control characters are not allowed")
    params = request.query_params
    found: dict[str, Any] = {}
    if "_format" in params and _one(request, "_format") not in _FORMATS:
        raise BadRequest("_format: only json is served")
    if "_id" in params:
        raw = [p.strip() for p in _one(request, "_id").split(",")]
        ids = [_patient_id(p) for p in raw]
        found["ids"] = tuple(i for i in ids if i is not None)
    if "identifier" in params:
        found["identifiers"] = _identifier_tokens(_one(request, "identifier"))
    for name in ("family", "given", "name"):
        if name in params:
            folded = fold(_one(request, name))
            if not folded:
                raise BadRequest(f"{name}: empty")
            found[name] = folded
    if "birthdate" in params:
        found["birth_date"] = _birth_date(_one(request, "birthdate"))
    if "gender" in params:
        genders = [g.strip() for g in _one(request, "gender").split(",")]
        try:
            found["sexes"] = sexes_for(genders)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    if "active" in params:
        raw = _one(request, "active").strip().lower()
        if raw not in ("true", "false"):
            raise BadRequest(f"active: true or false, got {raw!r}")
        found["active"] = raw == "true"
    return PatientCriteria(**found)


def _count(request: Request) -> int:
    if "_count" not in request.query_params:
        return DEFAULT_COUNT
    raw = _one(request, "_count").strip()
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_COUNT:
        raise BadRequest(f"_count: a number from 1 to {MAX_COUNT}, got {raw!r}")
    return int(raw)


def _cursor(request: Request) -> int | None:
    if "_cursor" not in request.query_params:
        return None
    raw = _one(request, "_cursor").strip()
    if not _ID.fullmatch(raw):
        raise BadRequest("_cursor: not a cursor this server gave (take the next link as is)")
    return int(raw)


def public_url_problem(url: str) -> str | None:
    """Why [http] public_url cannot be the base of FHIR links (one line), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"[http] public_url: expected scheme://host[:port][/prefix], got {url[:80]!r}"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "[http] public_url: no query, fragment or user information"
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return f"[http] public_url: the port of {url[:80]!r} is not a number"
    return None


def fhir_routes(engine: Engine, public_url: str = "") -> list[BaseRoute]:
    """The routes of /fhir (mounted there by build_app), reading from `engine`, which must
    never take the write lock (pamfr.store.db.make_read_engine). Links and fullUrl start
    with `public_url` + /fhir, else with the address the connection reached (scheme, the
    listening socket's host and port): never with the request's Host header."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    public = public_url.strip().rstrip("/")

    def base(request: Request) -> str:
        if public:
            return public + "/fhir"
        host, port = request.scope["server"] or ("127.0.0.1", None)
        host = f"[{host}]" if ":" in host else host
        scheme = request.scope["scheme"]
        default = {"http": 80, "https": 443}.get(scheme)
        address = host if port in (None, default) else f"{host}:{port}"
        return f"{scheme}://{address}/fhir"

    def metadata(_request: Request) -> Response:
        return FhirResponse(capability_statement(_software_version(), started))

    def load(request: Request, read_one: Callable) -> tuple[int, Any] | FhirResponse:
        """The path's patient id and what `read_one` found of it, or the 404 to answer."""
        patient_id = _patient_id(request.path_params["id"])
        if patient_id is None:
            return _not_found("this Patient")
        with reading(engine) as conn:
            found = read_one(conn, patient_id)
        if found is None:
            return _not_found(f"Patient/{patient_id}")
        return patient_id, found

    def read(request: Request) -> Response:
        loaded = load(request, current_version)
        if isinstance(loaded, FhirResponse):
            return loaded
        _, found = loaded
        return FhirResponse(version_resource(found), etag=found.version_id)

    def search(request: Request) -> Response:
        try:
            criteria = _criteria(request)
            count = _count(request)
            after = _cursor(request)
        except BadRequest as exc:
            return _outcome(400, "invalid", str(exc))
        with reading(engine) as conn:
            page = search_page(conn, criteria, after=after, count=count)
        root = base(request)
        entries = [
            {
                "fullUrl": f"{root}/Patient/{v.identity.id}",
                "resource": version_resource(v),
                "search": {"mode": "match"},
            }
            for v in page.versions
        ]
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
        query = urlencode(request.query_params.multi_items())
        links = [("self", f"{root}/Patient" + (f"?{query}" if query else ""))]
        if page.more:
            following = [*kept, ("_cursor", str(page.versions[-1].identity.id))]
            if "_count" not in request.query_params:
                following.append(("_count", str(count)))
            links.append(("next", f"{root}/Patient?{urlencode(following)}"))
        return FhirResponse(bundle("searchset", page.total, entries, links))

    def history(request: Request) -> Response:
        loaded = load(request, patient_versions)
        if isinstance(loaded, FhirResponse):
            return loaded
        patient_id, versions = loaded
        root = base(request)
        entries = []
        for v in reversed(versions):  # newest first
            entries.append(
                {
                    "fullUrl": f"{root}/Patient/{patient_id}",
                    "resource": version_resource(v),
                    "request": {
                        "method": "POST" if v.created else "PUT",
                        "url": "Patient" if v.created else f"Patient/{patient_id}",
                    },
                    "response": {
                        "status": "201 Created" if v.created else "200 OK",
                        "etag": f'W/"{v.version_id}"',
                        "lastModified": v.last_updated,
                    },
                }
            )
        links = [("self", f"{root}/Patient/{patient_id}/_history")]
        return FhirResponse(bundle("history", len(entries), entries, links))

    def vread(request: Request) -> Response:
        patient_id = _patient_id(request.path_params["id"])
        vid = request.path_params["vid"]
        if patient_id is None:
            return _not_found("this Patient")
        with reading(engine) as conn:
            found = find_version(conn, patient_id, vid) if _ID.fullmatch(vid) else None
            known = found is not None or current_version(conn, patient_id) is not None
        if found is None:
            what = f"Patient/{patient_id}"
            return _not_found(f"version {vid[:20]} of {what}" if known else what)
        return FhirResponse(version_resource(found), etag=found.version_id)

    def unknown(request: Request) -> Response:
        return _outcome(
            404, "not-supported", "this server reads Patient resources only (see /fhir/metadata)"
        )

    return [
        Route("/metadata", metadata, methods=["GET"]),
        Route("/Patient", search, methods=["GET"]),
        Route("/Patient/{id}", read, methods=["GET"]),
        Route("/Patient/{id}/_history", history, methods=["GET"]),
        Route("/Patient/{id}/_history/{vid}", vread, methods=["GET"]),
        Route("/{rest:path}", unknown, methods=["GET"]),
    ]
