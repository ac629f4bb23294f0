"""scripts/check-cocoindex-pins.sh: the project's pins resolve in one environment together with
`cocoindex-code[embeddings-local]`, so a user can run both from one venv. A pip resolver dry run against PyPI
(which CI reaches); nothing is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check-cocoindex-pins.sh"


def check_pins(*extra_requirements: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *extra_requirements], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=300)


def test_the_pins_resolve_with_cocoindex_code() -> None:
    done = check_pins()
    assert done.returncode == 0, done.stderr
    assert "resolves with cocoindex-code[embeddings-local]==0.2.42: cocoindex-code 0.2.42, cocoindex 1." in done.stdout
    assert "sentence-transformers 6.2.0, torch 2.13.0" in done.stdout


def test_a_conflict_fails_and_names_its_cause() -> None:
    done = check_pins("sentence-transformers==6.1.0")
    assert done.returncode != 0
    assert "rerank-sidecar 0.1.0 depends on sentence-transformers==6.2.0" in done.stderr
    assert "do not resolve together with cocoindex-code[embeddings-local]==0.2.42" in done.stderr
