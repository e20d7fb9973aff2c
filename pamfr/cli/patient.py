"""`pamfr patient show | history | find`: the identity store as an operator reads it."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING

import click

from pamfr.cli.common import Context, database_errors, db_option, open_engine

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from pamfr.identity.stored import StoredIdentity


@contextmanager
def _connect(obj: Context, db_url: str | None) -> Iterator[Connection]:
    settings = obj.settings(reading=True, **{"database.url": db_url})
    engine = open_engine(settings, read_only=True)
    try:
        with database_errors(settings), engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


BIRTH_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")


def _birth_date(ctx, param, value: str | None) -> str | None:
    """YYYY-MM-DD, YYYY-MM or YYYY (as stored), and a real date: anything else is refused
    rather than matching nobody."""
    if value is None:
        return None
    value = value.strip()
    ok = BIRTH_DATE.fullmatch(value) is not None
    if ok:
        year, month, day = (value.split("-") + ["01", "01"])[:3]
        try:
            date(int(year), int(month), int(day))
        except ValueError:
            ok = False
    if not ok:
        raise click.BadParameter(f"expected YYYY-MM-DD, YYYY-MM or YYYY, got {value!r}")
    return value


def _selector_options(f):
    f = click.option("--id", "patient_id", type=int, help="Internal patient id.")(f)
    f = click.option("--ins", help="INS matricule (15 characters).")(f)
    f = click.option(
        "--authority", metavar="NS_OR_OID", help="Assigning authority of --ipp (namespace or OID)."
    )(f)
    f = click.option("--ipp", help="IPP (PID-3 identifier of type PI).")(f)
    return f


def _resolve(conn, ipp, authority, ins, patient_id) -> int:
    """One patient id, or exit 1 (none) / 2 (ambiguous or no selector)."""
    from pamfr.store.readside import Selector, select_patient_ids, stored_identity

    if sum(x is not None for x in (ipp, ins, patient_id)) != 1:
        click.echo("give exactly one of --ipp, --ins or --id", err=True)
        sys.exit(2)
    ids = select_patient_ids(conn, Selector(ipp, authority, ins, patient_id))
    if not ids:
        click.echo("no patient matches", err=True)
        sys.exit(1)
    if len(ids) > 1:
        click.echo(f"{len(ids)} patients match; be more precise (--authority, --id):", err=True)
        for pid in ids:
            found = stored_identity(conn, pid)
            ipps = ", ".join(
                f"{i.value} ({i.oid or i.authority})" for i in found.identifiers if i.type == "PI"
            )
            state = "active" if found.active else f"merged into {found.merged_into}"
            click.echo(f"  --id {pid}: IPP {ipps}; {state}", err=True)
        sys.exit(2)
    return ids[0]


def _read_one(obj: Context, db_url, selector: tuple, read):
    """What `read` answers for the one patient the selector designates."""
    with _connect(obj, db_url) as conn:
        return read(conn, _resolve(conn, *selector))


def _echo_json(document) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


@click.group()
def patient() -> None:
    """Read the identity store: a patient, its history, a search."""


@patient.command()
@_selector_options
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the documented shape).")
@click.pass_obj
def show(obj: Context, ipp, authority, ins, patient_id, db_url, as_json) -> None:
    """Show one patient. Exit 0 found, 1 none, 2 ambiguous selector."""
    from pamfr.store.readside import stored_identity

    found = _read_one(obj, db_url, (ipp, authority, ins, patient_id), stored_identity)
    if as_json:
        _echo_json(found.as_json())
    else:
        click.echo(render_card(found))


def render_card(v: StoredIdentity) -> str:
    ins = v.ins
    state = "active" if v.active else f"MERGED into patient {v.merged_into}"
    shown = [f"{i.value}^{i.type}^{i.oid or i.authority}" for i in v.identifiers]
    if ins is not None:  # listed last, as in the JSON
        shown.append(f"{ins.value}^INS^{ins.oid}")
    lines = [
        f"Patient {v.id} ({state})",
        f"  Birth name        {v.birth_name or '-'}",
        f"  Birth given names {' '.join(v.birth_given_names) or '-'}"
        f" (first: {v.first_given_name or '-'})",
        f"  Used name         {v.used_name or '-'} {v.used_given_name or ''}".rstrip(),
        f"  Birth date        {v.birth_date or '-'}   Sex {v.sex or '-'}"
        f"   Birth place (INSEE) {v.birth_place_insee or '-'}",
        f"  Status            {v.status}"
        + (f" [{', '.join(v.attributes)}]" if v.attributes else ""),
        "  INS               "
        + (
            f"{ins.value} {v.ins_kind} ({'usable' if v.ins_usable else 'NOT usable'})"
            + (" COLLISION: held by another active patient" if v.ins_collision else "")
            if ins is not None
            else "-"
        ),
        "  Identifiers       " + ", ".join(shown),
    ]
    if v.links:
        lines.append(f"  Linked to         {', '.join(map(str, v.links))}")
    lines.append(f"  Updated           {v.updated_at.isoformat()}")
    return "\n".join(lines)


@patient.command()
@_selector_options
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list, oldest first.")
@click.pass_obj
def history(obj: Context, ipp, authority, ins, patient_id, db_url, as_json) -> None:
    """The changes made to one patient, oldest first, with the message behind each."""
    from pamfr.store.readside import patient_history

    rows = _read_one(obj, db_url, (ipp, authority, ins, patient_id), patient_history)
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['at']}  {r['event']} {r['operation']} (control id {r['control_id']})")
        for fld, (old, new) in r["changes"].items():
            click.echo(f"    {fld}: {old!r} -> {new!r}")
        for note in r["notes"]:
            click.echo(f"    note {note['finding']}: {note['text']}")


@patient.command()
@click.option("--name", help="Part of the birth or used name (case-insensitive).")
@click.option("--birth-date", callback=_birth_date, help="YYYY-MM-DD, YYYY-MM or YYYY, as stored.")
@click.option("--ins", help="INS matricule.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list of patients.")
@click.pass_obj
def find(obj: Context, name, birth_date, ins, limit, db_url, as_json) -> None:
    """Search patients by name, birth date or INS."""
    from pamfr.store.readside import find_patients, stored_identity

    with _connect(obj, db_url) as conn:
        found = [
            stored_identity(conn, pid)
            for pid in find_patients(conn, name=name, birth_date=birth_date, ins=ins, limit=limit)
        ]
    if as_json:
        _echo_json([v.as_json() for v in found])
        return
    for v in found:
        click.echo(
            f"{v.id:>7}  {v.birth_name or '-'} {v.first_given_name or ''}  "
            f"{v.birth_date or '-'} {v.sex or '-'}  {v.status}"
            + ("" if v.active else f"  (merged into {v.merged_into})")
        )


@patient.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {ins, patients}.")
@click.pass_obj
def collisions(obj: Context, db_url, as_json) -> None:
    """INS held by more than one active patient: usable on none of them until a merge (A40) or
    an INS deletion (A47) resolves it. Exit 0 when there is none, 1 otherwise."""
    from pamfr.store.readside import ins_collisions

    with _connect(obj, db_url) as conn:
        found = ins_collisions(conn)
    if as_json:
        click.echo(json.dumps([{"ins": v, "patients": ids} for v, ids in found]))
    else:
        for value, ids in found:
            click.echo(f"{value}  patients {', '.join(map(str, ids))}")
        if not found:
            click.echo("no INS collision")
    sys.exit(1 if found else 0)


@patient.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {patients: [id, id]}.")
@click.pass_obj
def doublons(obj: Context, db_url, as_json) -> None:
    """Potential doublons: active patients, neither linked nor decided "not a doublon" on
    the desk, with the same birth name, first birth given name, birth date and sex (accents,
    case, hyphens and spaces folded). Exit 0 when there is none, 1 otherwise."""
    from pamfr.store.worklists import potential_doublons

    with _connect(obj, db_url) as conn:
        pairs = potential_doublons(conn)
    if as_json:
        click.echo(json.dumps([{"patients": list(pair)} for pair in pairs]))
    else:
        for a, b in pairs:
            click.echo(f"patients {a}, {b}")
        if not pairs:
            click.echo("no potential doublon")
    sys.exit(1 if pairs else 0)


def _moment_option(ctx, param, value: str | None):
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected an ISO date or time, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@patient.command()
@_selector_options
@click.option(
    "--since", callback=_moment_option, help="Every identity's INS states from this time (ISO)."
)
@click.option("--until", callback=_moment_option, help="...up to this time (ISO, excluded).")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@db_option
@click.pass_obj
def trace(obj: Context, ipp, authority, ins, patient_id, since, until, fmt, db_url) -> None:
    """INS traceability: every INS state of one identity (--ipp, --ins, --id), or of every
    identity changed in a time range (--since [--until]): INS, OID, status, ZFD-5/6/7, the
    message that set it and why it was removed."""
    import csv

    from pamfr.store.trace import TRACE_COLUMNS, ins_trace, patients_changed_since

    one = any(x is not None for x in (ipp, ins, patient_id))
    if one == (since is not None):
        click.echo("give one of --ipp, --ins or --id, or --since (a time range)", err=True)
        sys.exit(2)
    with _connect(obj, db_url) as conn:
        if one:
            ids = [_resolve(conn, ipp, authority, ins, patient_id)]
        else:
            ids = patients_changed_since(conn, since)
        rows = ins_trace(conn, ids, since, until)
    if fmt == "json":
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from pamfr.desk.exports import cell  # no text a spreadsheet would run as a formula

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(TRACE_COLUMNS)
    for r in rows:
        writer.writerow([cell(r[c]) for c in TRACE_COLUMNS])
