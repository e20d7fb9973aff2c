"""The read side's two contracts pinned byte for byte: every `pamfr patient show --json` and
`pamfr patient find --json` document, and every FHIR read, history and search body (and the
text cards and histories an operator reads), of one
store holding a merge chain, a link, an INS collision, doublons, an INS deleted, a billing
NIR, a namespace-only authority and identities that changed over several messages.

The store is fed over real MLLP, then its times are set to fixed values, so what the CLI and
the API print depends on nothing but the read side. The expected text (pinned_read.txt, next
to this file) was produced by the read side before StoredIdentity (issue 22): a change there
is a change of contract. To look at a difference, the text printed is saved under the test's
tmp_path (the assertion names it).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from click.testing import CliRunner
from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.routing import Mount

from pamfr.cli import main
from pamfr.hl7.samples import INS_TEST_OID, Person, message, nir_with_key
from pamfr.http.fhir import fhir_routes
from pamfr.store.db import make_engine
from pamfr.store.schema import history, patient
from tests.desk.store import load
from tests.helpers import pamfr_server, send

PINNED = Path(__file__).with_name("pinned_read.txt")
EPOCH = datetime(2024, 3, 6, 11, 11, 54, tzinfo=UTC)

NIR = nir_with_key("1790363220123")
NIR_USABLE = nir_with_key("2850563220777")
BILLING = f"{NIR}^^^ASSUR&1.2.250.1.213.1.4.8&ISO^NH"
INS_DELETED = f'""^^^ASIP-SANTE-INS-NIR&{INS_TEST_OID}&ISO^INS'
VERSIONED = Person(
    ipp="VER1",
    birth_name="VERSION",
    given_names=("LÉA", "ROSE"),
    pid32=("PROV",),
    insee="99134",
    zfd5=None,
)
QUALIFIED_LATER = Person(
    **{
        **VERSIONED.__dict__,
        "used_name": "DUPONT",
        "used_given_name": "Léa",
        "pid32": ("VALI", "HOMA"),
        "zfd5": "INSI",
        "insee": "63220",
        "ins": NIR,
        "extra_ids": (BILLING,),
    }
)
YEAR_ONLY = Person(**{**QUALIFIED_LATER.__dict__, "birth_date": "1979", "pid32": ("VALI",)})
INS_REMOVED = Person(**{**YEAR_ONLY.__dict__, "ins": None, "extra_ids": (INS_DELETED, BILLING)})
NAMESPACE_ONLY = Person(
    ipp="NS01", birth_name="NSNAME", authority="HOSP NS", pid32=("PROV", "DOUT", "FICT"), zfd5="AV"
)
USABLE = Person(
    ipp="INS1",
    birth_name="QUALIFIEE",
    given_names=("ÈVE", "MARIE"),
    used_name="MARTIN",
    used_given_name="Ève",
    ins=NIR_USABLE,
    pid32=("VALI", "HOMA"),
)
CHAIN = [Person(ipp=f"CH{n}", birth_name="CHAINE", given_names=("ELIE",)) for n in (1, 2, 3)]


def _feed(db_url: str) -> None:
    load(db_url)  # the desk's store: collision, doublons, merge, link, AE and AR messages
    messages = [
        message("A28", VERSIONED, "PIN-1"),
        message("A31", QUALIFIED_LATER, "PIN-2"),
        message("A31", YEAR_ONLY, "PIN-3"),
        message("A31", INS_REMOVED, "PIN-4"),
        message("A28", NAMESPACE_ONLY, "PIN-5"),
        re.sub(r"ZFD\|[^\r]*", "ZFD|||Y|N|INSI|20211201|CN||", message("A28", USABLE, "PIN-8")),
        *(message("A28", p, f"PIN-C{n}") for n, p in enumerate(CHAIN)),
        message("A40", CHAIN[1], "PIN-6", prior_ipp="CH1"),
        message("A40", CHAIN[2], "PIN-7", prior_ipp="CH2"),
    ]
    with pamfr_server(db_url) as server:
        send(server.port, messages)


def _fix_times(db_url: str) -> list[int]:
    """Every patient created and updated at fixed times, every history row at its own."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            ids = [r[0] for r in conn.execute(select(patient.c.id).order_by(patient.c.id))]
            for pid in ids:
                conn.execute(
                    update(patient)
                    .where(patient.c.id == pid)
                    .values(created_at=EPOCH, updated_at=EPOCH + timedelta(hours=pid))
                )
            rows = [r[0] for r in conn.execute(select(history.c.id))]
            for hid in rows:
                conn.execute(
                    update(history)
                    .where(history.c.id == hid)
                    .values(at=EPOCH + timedelta(minutes=hid))
                )
    finally:
        engine.dispose()
    return ids


def _printed(db_url: str, ids: list[int]) -> str:
    runner = CliRunner()
    out: list[str] = []

    def cli(*args: str) -> None:
        result = runner.invoke(main, [*args, "--db", db_url])
        out.append(f"## pamfr {' '.join(args)} -> {result.exit_code}\n{result.stdout}")

    for pid in ids:
        cli("patient", "show", "--id", str(pid), "--json")
    cli("patient", "find", "--json")
    for pid in ids:  # the text the operator reads: no contract, but no change either
        cli("patient", "show", "--id", str(pid))
        cli("patient", "history", "--id", str(pid))
    cli("patient", "find")
    engine = make_engine(db_url)
    try:
        app = Starlette(routes=[Mount("/fhir", routes=fhir_routes(engine, "http://pinned.test"))])
        asyncio.run(_fhir_bodies(app, ids, out))
    finally:
        engine.dispose()
    return "".join(out)


async def _fhir_bodies(app: Starlette, ids: list[int], out: list[str]) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pinned.test") as client:

        async def get(path: str) -> dict:
            response = await client.get(path)
            etag = response.headers.get("etag")
            out.append(f"## GET {path} -> {response.status_code} {etag}\n{response.text}\n")
            return response.json()

        for pid in ids:
            await get(f"/fhir/Patient/{pid}")
            for entry in (await get(f"/fhir/Patient/{pid}/_history")).get("entry", []):
                await get(f"/fhir/Patient/{pid}/_history/{entry['resource']['meta']['versionId']}")
        await get("/fhir/Patient?_count=100")
        await get("/fhir/Patient?_count=5&active=true")


def test_show_find_and_fhir_bodies_are_pinned(sqlite_url, tmp_path):
    _feed(sqlite_url)
    printed = _printed(sqlite_url, _fix_times(sqlite_url))
    (tmp_path / PINNED.name).write_text(printed, encoding="utf-8")
    assert printed == PINNED.read_text(encoding="utf-8"), f"diff {PINNED} {tmp_path / PINNED.name}"
