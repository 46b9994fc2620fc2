"""Every CSV the bot hands out goes through here: cells a spreadsheet would run are defused, and the file opens
in Excel/WPS without mojibake.

Residents write need texts, staff write project titles, and a ledger is opened in Excel by someone else: a cell
starting with = + - @ (or a tab or carriage return, which some spreadsheets skip before looking) is read as a
formula there — `=HYPERLINK(...)` to leak the sheet, DDE to run a program (OWASP "CSV injection"). Such a text
cell gets a leading single quote, which spreadsheets show as text. Only strings are touched: a number passed
as a number (a points delta of -5) stays a number.

The file starts with a UTF-8 byte-order mark: without it Excel and WPS read the file in the system code page
(GBK) and every Chinese cell is mojibake.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from openpyxl import Workbook

BOM = "\ufeff"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """`value` as a spreadsheet will take it as data: a string starting like a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(rows: Iterable[Sequence[Any]], file: TextIO, header: Sequence[str] | None = None) -> None:
    """Write a UTF-8-BOM CSV to a text file (open it with newline=""): the header, then the rows, every cell
    through `safe_cell`."""
    file.write(BOM)
    writer = csv.writer(file)
    if header is not None:
        writer.writerow([safe_cell(cell) for cell in header])
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])


def csv_text(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """`write_csv` into a string (what a command prints)."""
    out = io.StringIO(newline="")
    write_csv(rows, out, header)
    return out.getvalue()


def csv_part(rows: Iterable[Sequence[Any]]) -> str:
    """More rows of a CSV streamed out in parts, after `csv_text` began it (BOM and header): no BOM here, which
    mid-file would be a stray character in a cell."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return out.getvalue()


def dict_rows(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    """Rows of dicts as rows of cells in `columns` order (a missing key is an empty cell)."""
    return [[row.get(column, "") for column in columns] for row in rows]


def xlsx_bytes(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None, title: str = "Sheet1") -> bytes:
    """An .xlsx workbook of one sheet (openpyxl), every cell through `safe_cell` like the CSV: a sheet is opened
    in Excel just the same, and openpyxl would store a text starting with "=" as a live formula."""
    out = io.BytesIO()
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title[:31])
    if header is not None:
        sheet.append([safe_cell(cell) for cell in header])
    for row in rows:
        sheet.append([safe_cell(cell) for cell in row])
    book.save(out)
    return out.getvalue()


class XlsxSheet:
    """A one-sheet workbook written a batch of rows at a time: openpyxl's write-only sheet sends each row to its
    own temporary file as it is appended (inline strings, no shared-string table), so memory stays one batch
    however long the sheet. `save` zips it to a path; `discard` drops a sheet that will not be saved."""

    def __init__(self, header: Sequence[str] | None = None, title: str = "Sheet1") -> None:
        self.book = Workbook(write_only=True)
        self.sheet = self.book.create_sheet(title[:31])
        if header is not None:
            self.append([header])

    def append(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self.sheet.append([safe_cell(cell) for cell in row])

    def save(self, path: str) -> None:
        self.book.save(path)  # removes openpyxl's temporary file too

    def discard(self) -> None:
        """Remove the rows' temporary file now: openpyxl would leave it until the process exits."""
        writer = getattr(self.sheet, "_writer", None)
        if writer is not None and not self.sheet.closed:
            writer.close()
            writer.cleanup()
