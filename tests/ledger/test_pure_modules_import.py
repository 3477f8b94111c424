"""The pure ledger modules import without Django (they are checked against published vectors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["ledger.merkle", "ledger.note", "ledger.checkpoint"])
def test_it_imports_pure_modules_without_django(module: str) -> None:
    code = f"import sys, {module}; sys.exit('django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr or f"{module} imported django"
