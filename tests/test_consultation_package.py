"""storage.consultation is a package split by concern whose __init__ re-exports what callers use; its tables stay
below it in storage.consultation_tables, so storage.audiences and storage.broadcast read them without running the
package (which imports the operations that send broadcasts). The import-graph test cannot see that circle — a
submodule's import runs its package first — so these import in a fresh interpreter, in every order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import storage.consultation as cs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "first", ["storage.audiences", "storage.broadcast", "storage.consultation", "storage.projects", "storage.tables"]
)
def test_the_package_imports_whoever_comes_first(first):
    code = f"import {first}\nimport storage.consultation, storage.broadcast, storage.audiences, storage.tables"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_reading_the_tables_does_not_load_the_operations():
    code = (
        "import sys, storage.consultation_tables, storage.audiences\n"
        "assert 'storage.consultation' not in sys.modules, 'the tables pulled in the operations'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_callers_name_everything_from_the_package():
    assert all(hasattr(cs, name) for name in cs.__all__)
    assert cs.ConsultationSession.__module__ == "storage.consultation_tables"
    assert cs.book_seat.__module__ == "storage.consultation.bookings"
