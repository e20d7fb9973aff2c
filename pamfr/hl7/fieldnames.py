"""The names of the fields of a segment (HL7 v2.5, from hl7apy's reference), for showing a
stored message laid out segment by segment."""

from __future__ import annotations

from functools import cache

from hl7apy import load_reference
from hl7apy.exceptions import ChildNotFound

# The PAM FR segments hl7apy does not know: the fields pamfr reads (PAM FR 2.11.1 §6.6.15).
_PAM_FR: dict[str, dict[int, str]] = {
    "ZFD": {
        5: "Identity mode (ZFD-5)",
        6: "INSi query date (ZFD-6)",
        7: "Identity document (ZFD-7)",
    },
}


@cache
def field_names(segment: str) -> dict[int, str]:
    """{position: "Patient Name"} for a segment id ("PID"); empty when it is unknown."""
    if segment in _PAM_FR:
        return _PAM_FR[segment]
    try:
        reference = load_reference(segment, "Segment", "2.5")
    except (ChildNotFound, KeyError, ValueError):
        return {}
    names: dict[int, str] = {}
    for child in reference[1]:
        name, ref = child[0], child[1]
        position = int(name.rsplit("_", 1)[1])
        long_name = ref[3] if len(ref) > 3 and isinstance(ref[3], str) else name
        names[position] = long_name.replace("_", " ").capitalize()
    return names


def split_segments(text: str) -> list[tuple[str, list[tuple[int, str, str]]]]:
    """Each segment of a decoded message as (id, [(position, name, value)]) for its non-empty
    fields; MSH counts its field separator as MSH-1."""
    laid_out = []
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        if len(line) < 3:
            continue
        segment_id = line[:3]
        separator = line[3] if len(line) > 3 else "|"
        values = line.split(separator)
        names = field_names(segment_id)
        if segment_id == "MSH":
            fields = [(1, separator), *((i + 1, v) for i, v in enumerate(values[1:], start=1))]
        else:
            fields = list(enumerate(values[1:], start=1))
        laid_out.append(
            (
                segment_id,
                [(pos, names.get(pos, ""), value) for pos, value in fields if value != ""],
            )
        )
    return laid_out
