"""A measured speed-up of hl7apy 1.3.x, applied once at import of pamfr.hl7.parse.

hl7apy calls `load_library(version)` (an `importlib.import_module`) for every element it
creates and every datatype check: about 700 calls per PID, 20 % of a PID parse here. The
answer for a version never changes, so it is memoised; the parse itself is untouched.
"""

from __future__ import annotations

import functools

import hl7apy
import hl7apy.core
import hl7apy.factories


def install() -> None:
    if getattr(hl7apy.load_library, "__wrapped__", None) is not None:
        return
    cached = functools.lru_cache(maxsize=None)(hl7apy.load_library)
    for module in (hl7apy, hl7apy.core, hl7apy.factories):
        module.load_library = cached
