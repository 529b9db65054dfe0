"""Sort a workbook's Results sheet in LibreOffice; say where each picture is before and after.

Run by tests/test_excel.py with the system Python that has LibreOffice's UNO
bridge (``python3-uno``), not with the test environment's:

    /usr/bin/python3 tests/libreoffice_sort.py report.xlsx PROFILE_DIR

Prints JSON: {"before": {shape: [row, column, file]}, "after": {...}} where
``file`` is the text in column A of the picture's anchor row (0-based rows).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import uno
from com.sun.star.beans import PropertyValue
from com.sun.star.table import TableSortField


def prop(name, value):
    p = PropertyValue()
    p.Name, p.Value = name, value
    return p


def pictures(sheet) -> dict[str, list]:
    found = {}
    page = sheet.DrawPage
    for i in range(page.Count):
        shape = page.getByIndex(i)
        anchor = shape.Anchor
        if not hasattr(anchor, "CellAddress"):  # anchored to the page, not a cell
            found[shape.Name] = [None, None, None]
            continue
        address = anchor.CellAddress
        found[shape.Name] = [
            address.Row,
            address.Column,
            sheet.getCellByPosition(0, address.Row).String,
        ]
    return found


def main() -> None:
    xlsx, profile = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    pipe = f"reporter_sort_{os.getpid()}"
    office = subprocess.Popen(
        [
            os.environ.get("SOFFICE", "soffice"),
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--invisible",
            "--norestore",
            f"--accept=pipe,name={pipe};urp;",
        ]
    )
    try:
        local = uno.getComponentContext()
        resolver = local.ServiceManager.createInstanceWithContext(
            "com.sun.star.bridge.UnoUrlResolver", local
        )
        for _ in range(240):
            try:
                ctx = resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
                break
            except Exception:
                time.sleep(0.25)
        else:
            raise SystemExit("LibreOffice did not start")
        desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
        doc = desktop.loadComponentFromURL(xlsx.as_uri(), "_blank", 0, (prop("Hidden", True),))
        sheet = doc.Sheets.getByName("Results")
        before = pictures(sheet)
        cursor = sheet.createCursor()
        cursor.gotoEndOfUsedArea(False)
        last_row = cursor.RangeAddress.EndRow
        last_col = cursor.RangeAddress.EndColumn
        # The data rows (row 3 on, 0-based 2), by file name, descending: what a user's sort does.
        rows = sheet.getCellRangeByPosition(0, 2, last_col, last_row)
        field = TableSortField()
        field.Field, field.IsAscending = 0, False
        rows.sort(
            (
                prop("SortFields", uno.Any("[]com.sun.star.table.TableSortField", (field,))),
                prop("ContainsHeader", False),
            )
        )
        after = pictures(sheet)
        print(json.dumps({"before": before, "after": after}))
        doc.close(True)
    finally:
        with contextlib.suppress(Exception):  # also when it never started
            desktop.terminate()
        try:
            office.wait(timeout=20)
        except subprocess.TimeoutExpired:
            office.kill()


if __name__ == "__main__":
    main()
