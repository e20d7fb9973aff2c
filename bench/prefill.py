"""Bulk insert of synthetic patients (not through the receiver), to measure a big store."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select, text

from pamfr.store.db import make_engine
from pamfr.store.schema import identifier, patient

CHUNK = 20_000


def prefill(url: str, count: int, authority: str = "PREFILL") -> None:
    engine = make_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        first = (conn.execute(select(patient.c.id).order_by(patient.c.id.desc())).scalar() or 0) + 1
    for start in range(0, count, CHUNK):
        ids = range(first + start, first + min(count, start + CHUNK))
        with engine.begin() as conn:
            conn.execute(
                insert(patient),
                [
                    dict(
                        id=i,
                        active=True,
                        birth_name=f"PREFILL{i % 5000}",
                        birth_name_key=f"prefill{i % 5000}",  # pamfr.identity.names.fold
                        first_given_name="JEAN",
                        first_given_key="jean",
                        birth_given_names="JEAN",
                        birth_date="1970-01-01",
                        sex="M",
                        status="provisoire",
                        attributes="",
                        other_status_codes="",
                        created_at=now,
                        updated_at=now,
                    )
                    for i in ids
                ],
            )
            conn.execute(
                insert(identifier),
                [
                    dict(
                        patient_id=i,
                        value=f"PF{i:09d}",
                        type="PI",
                        authority=authority,
                        oid="",
                        authority_key=authority,
                    )
                    for i in ids
                ],
            )
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('patient', 'id'), max(id)) FROM patient")
            )
    engine.dispose()
