"""The desk's lists as CSV (UTF-8 with a BOM, which spreadsheets read as UTF-8).

A cell comes from what a GAM sent (a sending application, a control id, a reason): one that
begins with =, +, -, @, a tab or a carriage return would be run as a formula by the
spreadsheet that opens the file (CSV injection), so such a text is written after a quote
('), which spreadsheets show as text. Numbers are written as they are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from starlette.responses import Response

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula ("" for None)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return Response(
        "\ufeff" + out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
