"""Rebuilding a patient from its history alone, to compare with what `show` says."""

from __future__ import annotations


def rebuild(rows: list[dict], upto_control_id: str | None = None) -> dict:
    """The patient's fields after the message `upto_control_id` (else after the last row).

    Each row's old value must be the previous row's new one: a missing row shows as a gap.
    Empty text, empty list and null are the same "nothing" here.
    """
    state: dict = {}
    for row in rows:
        for field, (old, new) in row["changes"].items():
            assert (state.get(field) or None) == (old or None), (field, row["control_id"])
            state[field] = new
        if row["control_id"] == upto_control_id:
            break
    return state


FIELDS = (
    "active",
    "merged_into",
    "birth_name",
    "first_given_name",
    "birth_given_names",
    "used_name",
    "used_given_name",
    "birth_date",
    "sex",
    "birth_place_insee",
    "ins_value",
    "ins_oid",
    "status",
    "attributes",
    "identity_mode",
    "identity_document",
    "identifiers",
    "ins_collision",
)


def as_history_fields(view: dict) -> dict:
    """A `show --json` object in the history's terms (the patient's columns)."""
    ins = view["ins"] or {}
    return {
        "active": view["active"],
        "merged_into": view["merged_into"],
        "birth_name": view["birth_name"],
        "first_given_name": view["first_given_name"],
        "birth_given_names": " ".join(view["birth_given_names"]) or None,
        "used_name": view["used_name"],
        "used_given_name": view["used_given_name"],
        "birth_date": view["birth_date"],
        "sex": view["sex"],
        "birth_place_insee": view["birth_place_insee"],
        "ins_value": ins.get("value"),
        "ins_oid": ins.get("oid"),
        "status": view["status"],
        "attributes": " ".join(view["attributes"]) or None,
        "identity_mode": view["identity_mode"],
        "identity_document": view["identity_document"],
        "ins_collision": view["ins_collision"] or None,
        "identifiers": sorted(
            f"{i['value']}^{i['type']}^{i['oid'] or i['authority']}"
            for i in view["identifiers"]
            if i["type"] != "INS"
        ),
    }


def rebuilt_view(rows: list[dict], upto_control_id: str | None = None) -> dict:
    """What as_history_fields(view) should be, from the history rows alone."""
    state = rebuild(rows, upto_control_id)
    out = {k: state.get(k) or None for k in FIELDS}
    out["active"] = state.get("active")
    out["identifiers"] = sorted(state.get("identifiers") or [])
    return out
