"""FHIR _history and vread rebuild past versions: an INS now in collision is in none."""

from __future__ import annotations

import json

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
            v.view, version_id=v.version_id, last_updated=v.last_updated, replaces=v.replaces
        )
        assert ins not in json.dumps(resource), v.version_id
        assert not any(p.endswith("fr-core-patient-ins|2.2.0") for p in resource["meta"]["profile"])
