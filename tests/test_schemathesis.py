"""Schema-driven fuzzing of every documented operation on a live sidecar: no 5xx, and every answer conforms.

`schemathesis run` reads /openapi.json from the running server, so routes added later are covered
without touching this file. Its examples, coverage (boundary and invalid values of every field)
and fuzzing phases send valid and invalid inputs; each answer must be a documented status with a
body and headers that match the schema. (The pytest integration's `from_fixture` does not work
with pytest 9, hence the CLI.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import LiveServer, sidecar_env, start_server

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
# Per operation, for the fuzzing phase; the coverage phase's count depends on the schema alone.
MAX_EXAMPLES = 20
# A fixed seed keeps the run reproducible: a failure replays with the same inputs.
SEED = 20240601


@pytest.fixture(scope="module")
def fuzzed_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("fuzzed")
    # Small limits, so generated inputs also cross them and the 422 answers get checked too.
    server = start_server(
        workdir,
        sidecar_env(workdir, max_documents="20", max_document_chars="2000", max_query_chars="500"),
    )
    yield server
    server.stop()


@pytest.mark.timeout(420)
def test_every_documented_operation_answers_as_documented(fuzzed_sidecar: LiveServer, tmp_path: Path) -> None:
    with fuzzed_sidecar.client() as client:
        assert client.post("/warmup").status_code == 200
        operations = json.loads(client.get("/openapi.json").text)["paths"]
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--no-color", "run", f"{fuzzed_sidecar.url}/openapi.json",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "60",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert f"Tested: {sum(len(methods) for methods in operations.values())}" in report, report[-3000:]

    entries = [json.loads(line) for line in fuzzed_sidecar.log_lines()]
    statuses = {entry["status"] for entry in entries}
    assert len(entries) > 100, "schemathesis sent fewer requests than expected"
    assert max(statuses) < 500, f"server errors in the request log: {sorted(statuses)}"
    assert {200, 422} <= statuses  # valid inputs were scored, invalid ones refused
