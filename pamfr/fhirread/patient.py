"""A stored patient's version as its FR Core Patient resource, and the resource of a patient
as it is now."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from pamfr.fhir.patient import patient_resource
from pamfr.store.fhirquery import PatientVersion, current_version, reading


def version_resource(v: PatientVersion) -> dict[str, Any]:
    """The resource of one version (its versionId, lastUpdated and the link to the record it
    replaced)."""
    return patient_resource(
        v.identity, version_id=v.version_id, last_updated=v.last_updated, replaces=v.replaces
    )


def current_resource(engine: Engine) -> Callable[[int], dict[str, Any] | None]:
    """The patient's FR Core resource as it is now (None when unknown), read with `engine`:
    what a webhook with include_resource carries."""

    def read(patient_id: int) -> dict[str, Any] | None:
        with reading(engine) as conn:
            found = current_version(conn, patient_id)
        return version_resource(found) if found is not None else None

    return read
