"""FHIR _history and vread rebuild past versions: an INS now in collision is in none."""

from __future__ import annotations

import json

from sqlalchemy import text

from pamfr.fhir.patient import patient_resource


def test_no_version_of_a_patient_serves_an_ins_now_in_collision(tmp_path):
    """Qualified with an INS, then another patient arrives with it (a collision: usable on
    neither): the current resource and every past version leave the INS out."""
    from sqlalchemy import text

    from pamfr.hl7.samples import Person, message, nir_with_key
    from pamfr.path.receiver import Receiver
    from pamfr.store.db import make_engine, make_read_engine, upgrade
    from pamfr.store.fhirquery import patient_versions, reading

    url = f"sqlite:///{tmp_path / 'h.db'}"
    upgrade(url)
    engine = make_engine(url)
    receiver = Receiver(engine)
    ins = nir_with_key("1610263220123")
    first = receiver.handle(message("A28", Person(ipp="A1", ins=ins), "H1").encode())
    update = receiver.handle(
        message("A31", Person(ipp="A1", ins=ins, used_name="X"), "H2").encode()
    )
    other = receiver.handle(message("A28", Person(ipp="B1", ins=ins), "H3").encode())
    assert (first.code, update.code, other.code) == ("AA", "AA", "AA")
    engine.dispose()
    reader = make_read_engine(url)
    with reading(reader) as conn:
        pid = conn.execute(text("SELECT patient_id FROM identifier WHERE value='A1'")).scalar()
        versions = patient_versions(conn, pid)
    reader.dispose()
    assert len(versions) >= 3
    for v in versions:
        resource = patient_resource(
            v.identity, version_id=v.version_id, last_updated=v.last_updated, replaces=v.replaces
        )
        assert ins not in json.dumps(resource), v.version_id
        assert not any(p.endswith("fr-core-patient-ins|2.2.0") for p in resource["meta"]["profile"])


def test_no_version_serves_an_ins_the_sender_deleted_as_wrongly_attributed(db_url):
    """Qualified with an INS, then an A47 of §4.4.3 deletes it (it was another person's): no
    version, past or current, serves it; an INS replaced by a new NIR (§4.4.2) stays in the
    versions it was in force for."""
    from pamfr.hl7.samples import Person, message, nir_with_key
    from pamfr.store.db import make_read_engine
    from pamfr.store.fhirquery import patient_versions, reading
    from tests.helpers import pamfr_server, send

    nir_oid = "1.2.250.1.213.1.4.8"
    wrong, old, new = (nir_with_key(b) for b in ("1610263220123", "2610263220124", "1610263220125"))

    def a47(who: str, control_id: str, prior: str, pid3_ins: str) -> str:
        text = message("A47", Person(who), control_id, prior_ipp="X")
        pid3 = f"{who}^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{pid3_ins}"
        text = text.replace(Person(who).pid3(), pid3)
        return text.replace(
            "MRG|X^^^CHU-X&1.2.250.1.999.1.1&ISO^PI",
            f"MRG|{prior}^^^ASIP-SANTE-INS-NIR&{nir_oid}&ISO^INS",
        )

    deleted = f'""^^^ASIP-SANTE-INS-NIR&{nir_oid}&ISO^INS'
    replaced = f"{new}^^^ASIP-SANTE-INS-NIR&{nir_oid}&ISO^INS"
    with pamfr_server(db_url) as server:
        acks = send(
            server.port,
            [
                message("A28", Person(ipp="W1", ins=wrong, ins_oid=nir_oid), "HD1"),
                message("A31", Person(ipp="W1", ins=wrong, ins_oid=nir_oid, used_name="Y"), "HD2"),
                a47("W1", "HD3", wrong, deleted),
                message("A28", Person(ipp="R1", ins=old, ins_oid=nir_oid, sex="F"), "HD4"),
                a47("R1", "HD5", old, replaced),
            ],
        )
    assert [a.code for a in acks] == ["AA"] * 5, [a.errs for a in acks]
    reader = make_read_engine(db_url)
    try:
        with reading(reader) as conn:
            ids = {
                who: conn.execute(
                    text(f"SELECT patient_id FROM identifier WHERE value='{who}'")
                ).scalar()
                for who in ("W1", "R1")
            }
            wrongly, replaced_versions = (patient_versions(conn, ids[w]) for w in ("W1", "R1"))
    finally:
        reader.dispose()
    assert len(wrongly) == 3
    for v in wrongly:
        resource = patient_resource(
            v.identity, version_id=v.version_id, last_updated=v.last_updated, replaces=v.replaces
        )
        assert wrong not in json.dumps(resource), v.version_id
    served = [
        json.dumps(patient_resource(v.identity, version_id="1", last_updated=""))
        for v in replaced_versions
    ]
    assert old in served[0] and new in served[-1] and old not in served[-1]


def test_an_ins_stored_as_an_identifier_by_an_older_store_is_never_served(db_url, engine):
    """Before the gate read every CX-5 type (G8), a refused INS typed INS-NIR (or with CX-5
    empty under the NIR OID) was stored among the identifiers. In a store so written, no reader
    shows it and no search finds the patient by it; the billing NIR (NH) stays served."""
    from sqlalchemy import insert

    from pamfr.hl7.samples import Person, message, nir_with_key
    from pamfr.store.db import make_read_engine
    from pamfr.store.fhirquery import (
        IdentifierCriterion,
        PatientCriteria,
        current_version,
        patient_versions,
        reading,
        search_patients,
    )
    from pamfr.store.schema import identifier
    from tests.helpers import pamfr_server, send

    nir_oid = "1.2.250.1.213.1.4.8"
    refused, billing = nir_with_key("1790363220123"), nir_with_key("2790363220456")
    with pamfr_server(db_url) as server:
        (ack,) = send(server.port, [message("A28", Person("OLD1", pid32=("PROV",)), "OLD-1")])
    assert ack.code == "AA", ack.errs
    try:
        with engine.begin() as conn:
            pid = conn.execute(
                text("SELECT patient_id FROM identifier WHERE value='OLD1'")
            ).scalar()
            rows = [
                (refused, "INS-NIR", "ASIP-SANTE-INS-NIR", nir_oid),
                (refused, "", "ASIP-SANTE-INS-NIR", nir_oid),
                (billing, "NH", "ASIP-SANTE-NIR", nir_oid),
            ]
            for value, kind, namespace, oid in rows:
                conn.execute(
                    insert(identifier).values(
                        patient_id=pid,
                        value=value,
                        type=kind,
                        authority=namespace,
                        oid=oid,
                        authority_key=oid,
                    )
                )
    finally:
        engine.dispose()
    reader = make_read_engine(db_url)
    try:
        with reading(reader) as conn:
            now = current_version(conn, pid)
            versions = patient_versions(conn, pid)
            by_value = search_patients(
                conn,
                PatientCriteria(identifiers=(IdentifierCriterion(refused),)),
                after=None,
                limit=5,
            )
            by_billing = search_patients(
                conn,
                PatientCriteria(identifiers=(IdentifierCriterion(billing),)),
                after=None,
                limit=5,
            )
    finally:
        reader.dispose()
    assert now is not None and versions
    for v in [now, *versions]:
        assert refused not in json.dumps(v.identity.as_json()), v.version_id
        resource = patient_resource(
            v.identity, version_id=v.version_id, last_updated=v.last_updated
        )
        assert refused not in json.dumps(resource)
    assert billing in json.dumps(patient_resource(now.identity, version_id="1", last_updated=""))
    assert (by_value, by_billing) == ([], [pid])
