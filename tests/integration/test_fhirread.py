"""pamfr/fhirread: a stored patient's FR Core resource read through an engine, what /fhir
serves and a webhook with include_resource carries."""

from __future__ import annotations

from sqlalchemy import text

from pamfr.fhirread.patient import current_resource, version_resource
from pamfr.hl7.samples import Person, message
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine, make_read_engine
from pamfr.store.fhirquery import current_version, reading


def test_the_current_resource_of_a_patient_and_none_for_an_unknown_id(sqlite_url):
    engine = make_engine(sqlite_url)
    reader = make_read_engine(sqlite_url)
    try:
        receiver = Receiver(engine)
        for event, person, control_id in (
            ("A28", Person(ipp="R1"), "R-1"),
            ("A31", Person(ipp="R1", used_name="NEW"), "R-2"),
        ):
            assert receiver.handle(message(event, person, control_id).encode()).code == "AA"
        with engine.connect() as conn:
            (patient_id,) = conn.execute(text("SELECT id FROM patient")).one()
        resource_for = current_resource(reader)
        found = resource_for(patient_id)
        assert found is not None
        assert (found["resourceType"], found["id"]) == ("Patient", str(patient_id))
        with reading(reader) as conn:
            now = current_version(conn, patient_id)
        assert now is not None and found == version_resource(now)
        assert found["meta"]["versionId"] == now.version_id
        assert resource_for(patient_id + 1000) is None
    finally:
        reader.dispose()
        engine.dispose()
