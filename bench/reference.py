"""The hl7apy reference: full parse of each message on one core, as the issue defines it."""

from __future__ import annotations

import gc
import statistics
import time

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message


def hl7apy_full_parse(messages: list[str], repeat_warmup: int = 20) -> dict:
    """Messages/second and median milliseconds of `parse_message` over the messages."""
    for m in messages[:repeat_warmup]:
        parse_message(m, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    times = []
    gc.collect()
    start = time.perf_counter()
    for m in messages:
        t = time.perf_counter()
        parse_message(m, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
        times.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    return {
        "count": len(messages),
        "msgs_per_s": len(messages) / elapsed,
        "median_ms": statistics.median(times) * 1000,
    }
