"""When a dropped file's content is complete enough to be taken (pure)."""

from __future__ import annotations

import pytest

from pamfr.ingest.files import incomplete_reason

MSG = b"MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|2024||ADT^A28^ADT_A05|1|T|2.5\rPID|1||1^^^H&1.2&ISO^PI\r"


@pytest.mark.parametrize(
    "data",
    [
        MSG,
        MSG.replace(b"\r", b"\n"),
        MSG.replace(b"\r", b"\r\n") + b"\r\n\r\n",
        MSG + MSG,
        b"\x0b" + MSG + b"\x1c\r",
        b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + MSG + b"BTS|2\rFTS|1\r",
        b"BHS|^~\\&\r" + MSG + b"BTS|1\r",
        b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + b"BTS|\rFTS|\r",  # counts are optional
    ],
)
def test_complete(data):
    assert incomplete_reason(data) is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\r\n", "empty"),
        (MSG[:-1], "no terminator"),
        (MSG + MSG[:40], "no terminator"),
        (b"\x0b" + MSG, "end marker"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSG, "no BTS"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + b"BTS|1\r", "no FTS"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + b"BTS|2\rFTS|1\r", "BTS-1 says 2"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + b"BTS|1\rFTS|3\r", "FTS-1 says 3"),
    ],
)
def test_incomplete(data, why):
    assert why in incomplete_reason(data)
