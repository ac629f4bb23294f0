"""The bench commands' terminal and files: one console, and every command's JSON results written one way."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console

# Piped output (a log, CI) gets room for a whole table instead of the 80-column default.
console = Console(width=None if sys.stdout.isatty() else 120)


def write_json(report: BaseModel, path: str) -> None:
    """Writes `report` to `path` (its directory created), where `bench report` reads it back."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report.model_dump(), indent=2))
    console.print(f"wrote {target}")
