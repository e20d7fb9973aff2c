"""The desk's routes, mounted at /desk on the HTTP port (docs/desk.md).

Every page but the sign-in page and the static files needs a session (pamfr/desk/session.py);
every POST its CSRF token; reprocessing and doublon decisions an operator. Each view of a
patient card, each export and each action is written to the access log (desk_access) with
the token's name and the internal ids. The database is read and written in threads, off the
event loop the MLLP door shares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time as clock
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pamfr.desk.exports import csv_response
from pamfr.desk.labels import OUTCOME_LABELS, STATUS_LABELS, ack_errors
from pamfr.desk.session import COOKIE, SIGNIN_COOKIE, Session, Sessions, csrf_ok
from pamfr.hl7.charset import stored_text
from pamfr.hl7.fieldnames import split_segments
from pamfr.settings.config import Settings
from pamfr.store import accesslog, overview, readside, trace, worklists
from pamfr.store.schema import history, message, patient

log = logging.getLogger("pamfr.desk")

HERE = Path(__file__).parent
PAGE_SIZE = 50
FIGURES_MAX_AGE = 300.0  # seconds
SIGNIN = "/desk/signin"
# The desk's forms are a CSRF token, a token, two ids and a reason: a body larger than this
# (the sign-in form is open to anyone who reaches the port) is refused with 413 unread.
MAX_FORM = 16 * 1024
MAX_FORM_FIELDS = 16
MAX_ID = 2**62  # ids, pages: within SQL's 64-bit integers
MAX_DAYS = 36_600  # ?jours: a hundred years
YEARS = (1000, 9998)  # of a time filter: a day later is still a date
BIRTH_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
EVENT = re.compile(r"[A-Z][0-9A-Z]{2}")
WORKLISTS = {
    "collisions": "Collisions d'INS",
    "doublons": "Doublons potentiels",
    "provisoires": "Identités provisoires anciennes",
    "ins-retires": "INS retirés (30 jours)",
    "refus": "Refus par émetteur (7 jours)",
}

Handler = Callable[[Request, Session], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class DoorState:
    """One door of the daemon as the overview shows it (counts and states, no patient data)."""

    name: str
    ok: bool
    detail: str


class Desk:
    """What the desk's pages need: the store (a read engine, and the write engine for the
    access log, the decisions and reprocessing), the settings, and in the daemon the state
    of its doors."""

    def __init__(
        self,
        read_engine: Engine,
        write_engine: Engine,
        settings: Settings,
        doors: Callable[[], Awaitable[list[DoorState]]] | None = None,
    ) -> None:
        self.doors = doors
        self.read_engine = read_engine
        self.write_engine = write_engine
        self.settings = settings
        self.sessions = Sessions(
            settings.http.tokens,
            settings.desk.operators,
            settings.desk.secret,
            settings.desk.idle_minutes * 60,
        )
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(
            status_label=STATUS_LABELS, outcome_label=OUTCOME_LABELS, worklists=WORKLISTS
        )
        self.templates.env.filters["moment"] = _moment
        self._receiver = None
        self._reprocessing = threading.Lock()  # one receiver: one reprocess at a time
        self._figures: dict[str, tuple[float, datetime, Any]] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Future] = set()

    def read(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """fn(conn, *args) on a read connection, in a thread."""

        def run() -> Any:
            with self.read_engine.connect() as conn:
                return fn(conn, *args)

        return run_in_threadpool(run)

    async def figures(self, name: str, fn: Callable[..., Any]) -> tuple[datetime, Any]:
        """fn(conn) for the figures that read the whole store (potential doublons, the weekly
        chart): computed once, then served as of their time and refreshed in the background
        once older than FIGURES_MAX_AGE, so that a page never waits for them twice."""
        found = self._figures.get(name)
        if found is None:
            value = await self.read(fn)
            self._figures[name] = (clock.monotonic(), datetime.now(UTC), value)
            return self._figures[name][1:]
        at, when, value = found
        if clock.monotonic() - at > FIGURES_MAX_AGE and name not in self._refreshing:
            self._refreshing.add(name)

            async def refresh() -> None:
                try:
                    fresh = await self.read(fn)
                    self._figures[name] = (clock.monotonic(), datetime.now(UTC), fresh)
                except SQLAlchemyError as exc:  # the figures as of before: said on the page
                    log.warning("desk: %s not refreshed: %s", name, type(exc).__name__)
                finally:
                    self._refreshing.discard(name)

            self._tasks.add(asyncio.ensure_future(refresh()))
            self._tasks = {t for t in self._tasks if not t.done()}
        return when, value

    async def audit(self, session: Session, action: str, **ids: Any) -> None:
        await run_in_threadpool(
            accesslog.record_access, self.write_engine, session.name, action, **ids
        )

    def reprocess(self, rows: list) -> Any:
        """path/reprocess with the receiver of every door and the operator's policy (built on
        first use), one request at a time; in a thread."""
        from pamfr.path.assemble import build_receiver
        from pamfr.path.reprocess import reprocess

        with self._reprocessing:
            if self._receiver is None:
                self._receiver = build_receiver(self.write_engine, self.settings)
            return reprocess(self._receiver, rows)

    # -- answers ---------------------------------------------------------------------------

    def page(
        self, request: Request, session: Session | None, template: str, status: int = 200, **ctx
    ) -> Response:
        answer = self.templates.TemplateResponse(
            request, template, {"session": session, **ctx}, status_code=status
        )
        if session is not None:
            self._set_cookie(request, answer, session)
        return answer

    def _set_cookie(self, request: Request, answer: Response, session: Session) -> None:
        answer.set_cookie(
            COOKIE,
            self.sessions.cookie(session),
            max_age=int(self.sessions.idle_seconds),
            path="/desk",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    # -- access ----------------------------------------------------------------------------

    def signed_in(self, handler: Handler, *, operator: bool = False) -> Callable:
        """The handler behind the session check; for a POST, the CSRF token (form field
        "csrf") and, for operator actions, the operator role."""

        async def endpoint(request: Request) -> Response:
            if any(isinstance(v, int) and v > MAX_ID for v in request.path_params.values()):
                raise HTTPException(404, "Cette page n'existe pas.")  # SQL would overflow
            session = self.sessions.read(request.cookies.get(COOKIE))
            if session is None:
                if request.method != "GET":
                    return await self.refuse(request, None, "no valid session")
                return RedirectResponse(SIGNIN, status_code=303)
            if request.method == "POST":
                form = await read_form(request, self.settings.http.header_timeout)
                if not csrf_ok(session, str(form.get("csrf", ""))):
                    return await self.refuse(request, session, "no valid CSRF token")
                if operator and not session.operator:
                    return await self.refuse(request, session, "not an operator")
            return await handler(request, session)

        return endpoint

    async def refuse(self, request: Request, session: Session | None, why: str) -> Response:
        who = session.name if session else "no session"
        log.warning(
            "desk %s %s -> 403 (%s): %s", request.method, _shown(request.url.path), who, why
        )
        if session is not None:
            await self.audit(session, "refused", detail=f"{_shown(request.url.path)}: {why}")
        return self.page(request, session, "error.html", 403, title="Refusé", text=_REFUSED[why])


_REFUSED = {
    "no valid session": "Votre session a expiré : reconnectez-vous, puis recommencez.",
    "no valid CSRF token": "Cette demande ne vient pas d'une page du bureau : rien n'a été fait.",
    "not an operator": "Cette action est réservée aux opérateurs : rien n'a été fait.",
}


def _shown(path: str) -> str:
    """The first two segments of a path: never an id."""
    return "/" + "/".join(path.strip("/").split("/")[:2])


def _moment(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bad(text: str) -> HTTPException:
    return HTTPException(400, text)


def _time_bound(value: str | None, name: str, *, end: bool = False) -> datetime | None:
    """A date (the day's start, or the next day's for an end) or an ISO time, else 400."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            if not YEARS[0] <= day.year <= YEARS[1]:
                raise ValueError(value)
            day += timedelta(days=1) if end else timedelta()
            return datetime.combine(day, time(), tzinfo=UTC)
        moment = datetime.fromisoformat(value)
        if not YEARS[0] <= moment.year <= YEARS[1]:  # 9999-12-31 + a day: OverflowError
            raise ValueError(value)
    except ValueError:
        raise _bad(f"{name} : date (AAAA-MM-JJ) ou heure ISO attendue") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def read_form(request: Request, seconds: float = 10.0) -> FormData:
    """The request's urlencoded form, MAX_FORM bytes at most (413 past it, read no further),
    all of it within `seconds` ([http] header_timeout; 408 past it: uvicorn bounds a request's
    head, not its body); a file part or more than MAX_FORM_FIELDS fields: 400."""
    too_long = HTTPException(413, "Trop long : ce formulaire dépasse la taille permise.")
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise _bad("Content-Length incorrect") from None
    if declared > MAX_FORM:
        raise too_long
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM:
                    raise too_long
    except TimeoutError:
        raise HTTPException(408, "Trop lent : le formulaire n'est pas arrivé à temps.") from None
    request._body = bytes(body)  # what Request.body() keeps: form() parses it, not the socket
    return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM)


def _int(value: str | None, name: str, default: int, lowest: int = 0, highest: int = MAX_ID) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise _bad(f"{name} : nombre entier attendu") from None
    if number < lowest:
        raise _bad(f"{name} : {lowest} au moins")
    if number > highest:  # past SQL's 64-bit integers, or a date before year 1: a 500
        raise _bad(f"{name} : {highest} au plus")
    return number


def build_desk(desk: Desk) -> ASGIApp:
    """The /desk application (mounted by pamfr/http/app.py)."""

    # -- sign-in ---------------------------------------------------------------------------

    async def signin_form(request: Request) -> Response:
        value, cookie = desk.sessions.signin_csrf()
        answer = desk.page(request, None, "signin.html", csrf=value, failed=False)
        _signin_cookie(request, answer, cookie)
        return answer

    async def signin(request: Request) -> Response:
        form = await read_form(request, desk.settings.http.header_timeout)
        if not desk.sessions.signin_csrf_ok(
            request.cookies.get(SIGNIN_COOKIE), str(form.get("csrf", ""))
        ):
            return await desk.refuse(request, None, "no valid CSRF token")
        name = desk.sessions.name_of(str(form.get("token", "")))
        if name is None:
            log.warning("desk sign-in refused from %s: unknown token", _client(request))
            value, cookie = desk.sessions.signin_csrf()
            answer = desk.page(request, None, "signin.html", 401, csrf=value, failed=True)
            _signin_cookie(request, answer, cookie)
            return answer
        session, _ = desk.sessions.open(name)
        log.info("desk sign-in of %s from %s", name, _client(request))
        await desk.audit(session, "sign-in")
        answer = RedirectResponse("/desk/", status_code=303)
        desk._set_cookie(request, answer, session)
        answer.delete_cookie(SIGNIN_COOKIE, path="/desk")
        return answer

    async def signout(request: Request, session: Session) -> Response:
        desk.sessions.end(session)
        await desk.audit(session, "sign-out")
        answer = RedirectResponse("/desk/signin", status_code=303)
        answer.delete_cookie(COOKIE, path="/desk")
        return answer

    # -- overview --------------------------------------------------------------------------

    async def home(request: Request, session: Session) -> Response:
        now = datetime.now(UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)

        def figures(conn):
            return (
                overview.overview(conn, today),
                overview.last_message_per_sender(conn),
                overview.messages_per_hour(conn, now),
                overview.webhook_lag(conn, [w.name for w in desk.settings.webhooks]),
            )

        found, senders, hourly, webhooks = await desk.read(figures)
        as_of, weekly = await desk.figures(
            "weekly", lambda conn: overview.provisional_share_per_week(conn, datetime.now(UTC))
        )
        _, pairs = await desk.figures("doublon-pairs", worklists.pairs_by_key)
        doublons = len(await desk.read(worklists.still_doublons, pairs))
        doors = await desk.doors() if desk.doors is not None else None
        # Inside a <script> element: "</" could end it early.
        charts = json.dumps({"hourly": hourly, "weekly": weekly}).replace("</", "<\\/")
        return desk.page(
            request,
            session,
            "overview.html",
            o=found,
            senders=senders,
            doublons=doublons,
            as_of=as_of,
            charts=charts,
            doors=doors,
            webhooks=webhooks,
        )

    # -- patients --------------------------------------------------------------------------

    async def patients(request: Request, session: Session) -> Response:
        q = request.query_params
        name, birth_date = q.get("nom", "").strip(), q.get("naissance", "").strip()
        ipp, ins = q.get("ipp", "").strip(), q.get("ins", "").strip()
        if birth_date and not BIRTH_DATE.fullmatch(birth_date):
            raise _bad("date de naissance : AAAA-MM-JJ, AAAA-MM ou AAAA attendue")

        def search(conn):
            if ipp:
                ids = readside.select_patient_ids(conn, readside.Selector(ipp=ipp))
            elif name or birth_date or ins:
                ids = readside.find_patients(
                    conn, name=name or None, birth_date=birth_date or None, ins=ins or None
                )
            else:
                ids = []
            return [readside.patient_view(conn, pid) for pid in ids]

        found = await desk.read(search)
        asked = bool(name or birth_date or ipp or ins)
        if asked:  # the patients shown, never the criteria (a name, an INS)
            await run_in_threadpool(
                accesslog.record_patients,
                desk.write_engine,
                session.name,
                "search-patients",
                [p["id"] for p in found],
                f"{len(found)} found",
            )
        return desk.page(request, session, "patients.html", found=found, asked=asked, q=q)

    async def patient_card(request: Request, session: Session) -> Response:
        pid = request.path_params["pid"]

        def card(conn):
            if not readside.select_patient_ids(conn, readside.Selector(id=pid)):
                return None
            merged = [
                r[0] for r in conn.execute(select(patient.c.id).where(patient.c.merged_into == pid))
            ]
            return readside.patient_view(conn, pid), readside.patient_history(conn, pid), merged

        found = await desk.read(card)
        if found is None:
            raise HTTPException(404, "Patient inconnu.")
        await desk.audit(session, "view-patient", patient_id=pid)
        view, timeline, merged = found
        return desk.page(request, session, "patient.html", p=view, timeline=timeline, merged=merged)

    async def patient_trace(request: Request, session: Session) -> Response:
        pid, kind = request.path_params["pid"], request.path_params["kind"]
        if kind not in ("csv", "json"):
            raise HTTPException(404, "Format inconnu.")

        def rows(conn):
            if not readside.select_patient_ids(conn, readside.Selector(id=pid)):
                return None
            return trace.ins_trace(conn, [pid])

        found = await desk.read(rows)
        if found is None:
            raise HTTPException(404, "Patient inconnu.")
        await desk.audit(session, "export-trace", patient_id=pid, detail=kind)
        return _trace_answer(found, f"trace-ins-patient-{pid}", kind)

    async def range_trace(request: Request, session: Session) -> Response:
        q = request.query_params
        kind = q.get("format", "csv")
        if kind not in ("csv", "json"):
            raise _bad("format : csv ou json")
        since = _time_bound(q.get("depuis"), "depuis")
        until = _time_bound(q.get("jusqu_a"), "jusqu_a", end=True)
        if since is None:
            raise _bad("depuis : une date de début est nécessaire")

        def rows(conn):
            return trace.ins_trace(conn, trace.patients_changed_since(conn, since), since, until)

        found = await desk.read(rows)
        # the range exported (dates, no patient data): what an audit must be able to tell
        span = f"{since.isoformat()} {until.isoformat() if until else '-'}"
        await desk.audit(session, "export-trace", detail=f"range {kind} {span}")
        return _trace_answer(found, "trace-ins", kind)

    # -- messages --------------------------------------------------------------------------

    async def messages(request: Request, session: Session) -> Response:
        q = request.query_params
        outcome = q.get("issue", "")
        if outcome not in ("", "AA", "AE", "AR"):
            raise _bad("issue : AA, AE ou AR")
        event = q.get("evenement", "").strip().upper()
        if event and not EVENT.fullmatch(event):
            raise _bad("événement : trois caractères (A28, A31...)")
        sender = q.get("emetteur", "").strip()
        app_name, _, facility = sender.partition("|")
        page_number = _int(q.get("page"), "page", 1, lowest=1, highest=MAX_ID // PAGE_SIZE)
        selected = readside.MessageFilter(
            outcome=outcome or None,
            warnings=q.get("avertissements") == "1",
            event=event or None,
            sending_app=app_name or None,
            sending_facility=facility or None,
            since=_time_bound(q.get("depuis"), "depuis"),
            until=_time_bound(q.get("jusqu_a"), "jusqu_a", end=True),
            control_id=q.get("msh10", "").strip() or None,
            ipp=q.get("ipp", "").strip() or None,
            limit=PAGE_SIZE + 1,
            offset=(page_number - 1) * PAGE_SIZE,
        )
        rows = await desk.read(readside.message_log, selected)
        more = len(rows) > PAGE_SIZE
        query = urlencode([(k, v) for k, v in q.multi_items() if k != "page"])
        return desk.page(
            request,
            session,
            "messages.html",
            rows=rows[:PAGE_SIZE],
            q=q,
            page=page_number,
            more=more,
            query=query,
        )

    async def message_page(request: Request, session: Session) -> Response:
        mid = request.path_params["mid"]

        def read(conn):
            row = conn.execute(select(message).where(message.c.id == mid)).mappings().first()
            if row is None:
                return None
            touched = [
                r[0]
                for r in conn.execute(
                    select(history.c.patient_id).distinct().where(history.c.message_id == mid)
                )
            ]
            reruns = [
                r[0]
                for r in conn.execute(select(message.c.id).where(message.c.reprocess_of == mid))
            ]
            return dict(row), sorted(touched), reruns

        found = await desk.read(read)
        if found is None:
            raise HTTPException(404, "Message inconnu.")
        row, touched, reruns = found
        await desk.audit(session, "view-message", message_id=mid)
        text = stored_text(bytes(row["raw"]), row["charset"])
        ack = stored_text(bytes(row["ack"] or b""), row["charset"])
        return desk.page(
            request,
            session,
            "message.html",
            m=row,
            segments=split_segments(text),
            errs=ack_errors(ack),
            touched=touched,
            reruns=reruns,
        )

    async def reprocess_confirm(request: Request, session: Session) -> Response:
        mid = request.path_params["mid"]
        row = await desk.read(_message_row, mid)
        if row is None:
            raise HTTPException(404, "Message inconnu.")
        return desk.page(request, session, "reprocess.html", m=row)

    async def reprocess(request: Request, session: Session) -> Response:
        from pamfr.path.reprocess import candidates

        mid = request.path_params["mid"]
        row = await desk.read(_message_row, mid)
        if row is None:
            raise HTTPException(404, "Message inconnu.")
        if row["outcome"] not in ("AE", "AR"):
            raise _bad("seuls les messages refusés (AE) ou rejetés (AR) se retraitent")

        def pending(conn):
            found = candidates(conn, row["outcome"], control_id=row["control_id"])
            return [c for c in found if c.id == mid]

        rows = await desk.read(pending)
        if not rows:
            raise HTTPException(409, "Ce message a déjà été retraité (voir ses retraitements).")
        if rows[0].cannot:
            raise HTTPException(409, f"Ce message ne peut être retraité : {rows[0].cannot}")
        result = await run_in_threadpool(desk.reprocess, rows)
        _, code, new_id = result.rows[0]
        log.info("desk reprocess of message %d by %s: %s", mid, session.name, code)
        await desk.audit(session, "reprocess", message_id=mid, detail=f"{code} {new_id}")
        return RedirectResponse(f"/desk/messages/{new_id}", status_code=303)

    # -- worklists -------------------------------------------------------------------------

    async def worklist(request: Request, session: Session) -> Response:
        name, kind = request.path_params["name"], request.path_params.get("kind")
        if name not in WORKLISTS or kind not in (None, "csv"):
            raise HTTPException(404, "Liste inconnue.")
        days = _int(
            request.query_params.get("jours"),
            "jours",
            desk.settings.desk.provisional_days,
            highest=MAX_DAYS,
        )
        pairs, as_of = None, None
        if name == "doublons":
            as_of, pairs = await desk.figures("doublon-pairs", worklists.pairs_by_key)
        header, rows, patients, decisions = await desk.read(_worklist, name, days, pairs)
        if kind == "csv":
            await desk.audit(session, "export-worklist", detail=name)
            return csv_response(f"{name}.csv", header, rows)
        await desk.audit(session, "view-worklist", detail=name)  # it shows patients' traits
        return desk.page(
            request,
            session,
            "worklist.html",
            name=name,
            title=WORKLISTS[name],
            header=header,
            rows=rows,
            patients=patients,
            decisions=decisions,
            days=days,
            as_of=as_of,
        )

    async def decide(request: Request, session: Session) -> Response:
        form = await read_form(request)
        a = _int(str(form.get("a", "")), "a", 0, lowest=1)
        b = _int(str(form.get("b", "")), "b", 0, lowest=1)
        reason = str(form.get("raison", "")).strip()
        if not reason:
            raise _bad("raison : dites pourquoi ce n'est pas un doublon")
        _, by_key = await desk.figures("doublon-pairs", worklists.pairs_by_key)
        pairs = await desk.read(worklists.still_doublons, by_key)
        if (min(a, b), max(a, b)) not in pairs:
            raise HTTPException(409, "Cette paire n'est pas (ou plus) un doublon potentiel.")
        try:
            await run_in_threadpool(
                worklists.record_not_doublon, desk.write_engine, a, b, session.name, reason
            )
        except worklists.DecisionExists:
            raise HTTPException(409, "Cette paire a déjà une décision.") from None
        for pid in (a, b):
            await desk.audit(session, "not-doublon", patient_id=pid, detail=f"pair {a} {b}")
        return RedirectResponse("/desk/listes/doublons", status_code=303)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        session = desk.sessions.read(request.cookies.get(COOKIE))
        titles = {
            400: "Demande incorrecte",
            404: "Introuvable",
            409: "Impossible",
            408: "Trop lent",
            413: "Trop long",
        }
        return desk.page(
            request,
            session,
            "error.html",
            exc.status_code,
            title=titles.get(exc.status_code, "Erreur"),
            text=exc.detail
            if exc.status_code != 404 or exc.detail != "Not Found"
            else "Cette page n'existe pas.",
        )

    s = desk.signed_in
    routes = [
        Route("/", s(home), methods=["GET"]),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", s(signout), methods=["POST"]),
        Route("/patients", s(patients), methods=["GET"]),
        Route("/patients/{pid:int}", s(patient_card), methods=["GET"]),
        Route("/patients/{pid:int}/trace.{kind}", s(patient_trace), methods=["GET"]),
        Route("/trace", s(range_trace), methods=["GET"]),
        Route("/messages", s(messages), methods=["GET"]),
        Route("/messages/{mid:int}", s(message_page), methods=["GET"]),
        Route("/messages/{mid:int}/retraiter", s(reprocess_confirm), methods=["GET"]),
        Route("/messages/{mid:int}/retraiter", s(reprocess, operator=True), methods=["POST"]),
        Route("/listes/{name}.{kind}", s(worklist), methods=["GET"]),
        Route("/listes/{name}", s(worklist), methods=["GET"]),
        Route("/doublons/decision", s(decide, operator=True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        static = scope.get("path", "").startswith(("/desk/static/", "/static/"))

        async def send_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0] != b"cache-control"]
                extra = _PAGE_HEADERS if not static else _STATIC_HEADERS
                message = {**message, "headers": headers + extra}
            await send(message)

        await app(scope, receive, send_headers)

    return guarded


# Pages and exports hold patient data: never kept in a browser's cache (a shared
# workstation), never framed by another page (clickjacking an operator's button), no script
# but the desk's own files; the desk's static files may be cached.
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_PAGE_HEADERS = [
    (b"cache-control", b"no-store"),
    (
        b"content-security-policy",
        b"script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    *_COMMON_HEADERS,
]
_STATIC_HEADERS = [(b"cache-control", b"max-age=3600"), *_COMMON_HEADERS]


def _signin_cookie(request: Request, answer: Response, value: str) -> None:
    answer.set_cookie(
        SIGNIN_COOKIE,
        value,
        max_age=3600,
        path="/desk",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def _message_row(conn, mid: int) -> dict | None:
    row = conn.execute(select(message).where(message.c.id == mid)).mappings().first()
    return dict(row) if row is not None else None


def _trace_answer(rows: list[dict], stem: str, kind: str) -> Response:
    if kind == "json":
        return JSONResponse(
            rows, headers={"content-disposition": f'attachment; filename="{stem}.json"'}
        )
    return csv_response(
        f"{stem}.csv", trace.TRACE_COLUMNS, ([r[c] for c in trace.TRACE_COLUMNS] for r in rows)
    )


def _worklist(
    conn, name: str, days: int, pairs: list[tuple[int, int]] | None
) -> tuple[list[str], list[list], dict, list]:
    """(CSV header, rows, {patient id: view} of the patients named, decisions); `pairs`:
    the doublon pairs by key, as the desk keeps them."""
    decisions: list = []
    if name == "collisions":
        header = ["ins", "patients"]
        found = readside.ins_collisions(conn)
        rows = [[ins, " ".join(map(str, ids))] for ins, ids in found]
        ids = [pid for _, pids in found for pid in pids]
    elif name == "doublons":
        header = ["patient_a", "patient_b"]
        pairs = worklists.still_doublons(conn, pairs or [])
        rows = [list(p) for p in pairs]
        ids = [pid for pair in pairs[:200] for pid in pair]
        decisions = worklists.doublon_decisions(conn)
        ids += [pid for d in decisions[:100] for pid in (d.patient_a, d.patient_b)]
    elif name == "provisoires":
        header = ["patient_id", "created_at"]
        found = worklists.provisional_older_than(conn, days)
        rows = [[r["patient_id"], r["created_at"].isoformat()] for r in found]
        ids = [r["patient_id"] for r in found[:200]]
    elif name == "ins-retires":
        header = ["patient_id", "at", "message_id", "control_id", "event", "finding", "why"]
        found = worklists.ins_removed_since(conn, 30)
        rows = [[r[c] if c != "at" else r[c].isoformat() for c in header] for r in found]
        ids = [r["patient_id"] for r in found[:200]]
    else:  # refus
        header = ["sender", "outcome", "count", "last"]
        found = worklists.refusals_per_sender(conn, 7)
        rows = [[r["sender"], r["outcome"], r["count"], r["last"].isoformat()] for r in found]
        ids = []
    patients = worklists.patient_summaries(conn, list(dict.fromkeys(ids)))
    return header, rows, patients, decisions
