"""The bench commands' terminal and files: one console, and every command's JSON results written one way."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console

# Piped output (a log, CI) gets room for a whole table instead of the 80-column default.
console = Console(width=None if sys.stdout.isatty() else 120)


def ms_cell(milliseconds: float) -> str:
    """A latency for a table: whole ms, or "-" where there is none (NaN: in-process runs)."""
    return "-" if math.isnan(milliseconds) else f"{milliseconds:.0f}"


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """`--json`, the file `write_json` writes."""
    parser.add_argument("--json", dest="json_out", help="write the results to this JSON file (read by bench report)")


def write_json(report: BaseModel, path: str | None) -> None:
    """Writes `report` to `path` (its directory created), where `bench report` reads it back; no path, no file."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report.model_dump(), indent=2))
    console.print(f"wrote {target}")
