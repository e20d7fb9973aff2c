"""Stored identities as FHIR R4 resources (FR Core profiles): pure mapping, no I/O.

The resources are plain dicts (JSON as sent); docs/fhir.md has the mapping table.
"""
