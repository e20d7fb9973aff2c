"""The SQL statements of the identity writes, built once: building one costs twice what
executing it does. Shared by the repository, the write sinks (store/sink) and the PostgreSQL
look-ahead (store/pgbatch)."""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select, update

from pamfr.store.schema import history, identifier, patient, patient_link

FIND_PATIENT_ID = (
    select(identifier.c.patient_id)
    .where(
        identifier.c.authority_key == bindparam("k"),
        identifier.c.value == bindparam("v"),
        identifier.c.type == bindparam("t"),
    )
    .limit(1)
)
LOAD_PATIENT = select(patient).where(patient.c.id == bindparam("pid"))
LOAD_PATIENT_FOR_UPDATE = LOAD_PATIENT.with_for_update()
# Look-up and load (and lock) in one round trip, for the usual PID-3 with a single IPP.
LOAD_BY_IPP = select(patient).where(patient.c.id == FIND_PATIENT_ID.scalar_subquery())
LOAD_BY_IPP_FOR_UPDATE = LOAD_BY_IPP.with_for_update()
PATIENT_IDENTIFIERS = (
    select(identifier).where(identifier.c.patient_id == bindparam("pid")).order_by(identifier.c.id)
)
INSERT_PATIENT = insert(patient).returning(patient.c.id)
NULL_COLUMNS = dict.fromkeys(c.name for c in patient.c if c.nullable and not c.primary_key)
INSERT_IDENTIFIED_PATIENT = insert(patient)
INSERT_IDENTIFIER = insert(identifier)
UPDATE_PATIENT = update(patient).where(patient.c.id == bindparam("pid"))
INSERT_HISTORY = insert(history)
INSERT_LINK = insert(patient_link)
ACTIVE_HOLDERS = select(patient.c.id, patient.c.ins_collision).where(
    patient.c.ins_value == bindparam("v"), patient.c.active.is_(True)
)
LOCK_INS = select(func.pg_advisory_xact_lock(func.hashtext(bindparam("v"))))
SET_COLLISION = (
    update(patient).where(patient.c.id == bindparam("pid")).values(ins_collision=bindparam("flag"))
)
MERGED_INTO = (
    select(patient.c.id).where(patient.c.merged_into == bindparam("pid")).order_by(patient.c.id)
)
SET_MERGED_INTO = (
    update(patient).where(patient.c.id == bindparam("pid")).values(merged_into=bindparam("into"))
)
DEACTIVATE = (
    update(patient)
    .where(patient.c.id == bindparam("pid"))
    .values(active=False, merged_into=bindparam("into"), updated_at=bindparam("now"))
)
SURVIVOR = select(patient.c.merged_into).where(patient.c.id == bindparam("pid"))


# A batch's look-up of several IPPs at once (PostgreSQL) is one equality look-up per IPP, all
# sent together: each uses the IPP index whatever the statistics say, where one statement for
# all (a join on unnest, or ANY arrays) was planned as a scan of the whole index while the
# tables were young. Their identifiers are read once all the rows are locked.
IDENTIFIERS_BY_IPP = (
    select(identifier)
    .where(identifier.c.patient_id == FIND_PATIENT_ID.scalar_subquery())
    .order_by(identifier.c.id)
)
