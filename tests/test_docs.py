"""Docs that match the code: settings and their defaults, routes, CLI commands, ensure's output, links.

Each test reads the docs as text and compares them with the code's own objects (the settings class,
the FastAPI app, the argparse parser); nothing here loads a model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from platformdirs import user_cache_dir, user_state_dir
from pydantic.fields import FieldInfo
from starlette.routing import Match

from rerank_sidecar.api.app import create_app
from rerank_sidecar.cli import build_parser
from rerank_sidecar.config import Settings
from rerank_sidecar.launcher import EnsureResult

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "SKILL.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").rglob("*.md"))]

# .env.example: `RERANK_X=value` states the default; `# RERANK_X=...` is a setting with no value by default.
ENV_LINE = re.compile(r"^(?P<commented># )?RERANK_(?P<name>[A-Z0-9_]+)=", re.MULTILINE)
# SKILL.md's settings table: | `RERANK_X` | default | meaning |
SETTINGS_ROW = re.compile(r"^\| `RERANK_(?P<name>[A-Z0-9_]+)` \| (?P<default>[^|]+?) \|", re.MULTILINE)
# Placeholders SKILL.md writes for defaults found at run time.
RUN_TIME_DIRS = {
    "<user state dir>": user_state_dir("rerank-sidecar"),
    "<user cache dir>": user_cache_dir("rerank-sidecar"),
}
ROUTE_MENTION = re.compile(r"\b(?P<method>GET|POST|PUT|PATCH|DELETE) (?P<path>/[A-Za-z0-9_./{}-]*)")


def has_no_value_by_default(field: FieldInfo) -> bool:
    """Empty, unset, or computed when the settings are read (a default_factory: a path, an empty list)."""
    return field.default_factory is not None or field.default in ("", None)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No RERANK_* variable from the test's own environment leaks into the settings read here."""
    for variable in [name for name in os.environ if name.startswith("RERANK_")]:
        monkeypatch.delenv(variable)
    return monkeypatch


def env_example_lines() -> dict[str, bool]:
    """Each setting .env.example names, and whether its line is commented out."""
    text = (REPO / ".env.example").read_text()
    lines: dict[str, bool] = {}
    for match in ENV_LINE.finditer(text):
        name = match["name"].lower()
        assert name not in lines, f"RERANK_{match['name']} appears twice in .env.example"
        lines[name] = bool(match["commented"])
    return lines


def test_env_example_lists_every_setting_once_and_nothing_else() -> None:
    lines = env_example_lines()
    assert sorted(lines) == sorted(Settings.model_fields), (
        f"missing from .env.example: {sorted(set(Settings.model_fields) - set(lines))}; "
        f"not a setting: {sorted(set(lines) - set(Settings.model_fields))}"
    )


def test_env_example_states_the_code_defaults(clean_environment: pytest.MonkeyPatch) -> None:
    """The file read as settings, exactly as `.env` is read, gives the defaults; commented lines only where none."""
    from_file = Settings(_env_file=REPO / ".env.example")
    defaults = Settings(_env_file=None)
    for name, commented in env_example_lines().items():
        variable = f"RERANK_{name.upper()}"
        if commented:
            assert has_no_value_by_default(Settings.model_fields[name]), (
                f".env.example comments out {variable}, but its default is {getattr(defaults, name)!r}: "
                f"write it as {variable}=<that default>"
            )
        else:
            assert getattr(from_file, name) == getattr(defaults, name), (
                f".env.example gives {variable} = {getattr(from_file, name)!r}; the code's default is "
                f"{getattr(defaults, name)!r}"
            )


def test_skill_settings_table_lists_every_setting_once_with_the_code_default(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    """A default is `value` (read as the environment variable would be), (empty) or (unset)."""
    rows = [(row["name"].lower(), row["default"]) for row in SETTINGS_ROW.finditer((REPO / "SKILL.md").read_text())]
    names = sorted(name for name, _ in rows)
    assert names == sorted(Settings.model_fields), "SKILL.md's settings table: one row per setting, nothing else"
    defaults = Settings(_env_file=None)
    for name, stated in rows:
        variable, default = f"RERANK_{name.upper()}", getattr(defaults, name)
        if stated == "(empty)":
            assert default in ("", []), f"SKILL.md says {variable} is empty by default; the code has {default!r}"
        elif stated == "(unset)":
            assert default is None, f"SKILL.md says {variable} is unset by default; the code has {default!r}"
        else:
            assert stated.startswith("`") and stated.endswith("`"), (
                f"SKILL.md: {variable}'s default {stated!r} is none of `value`, (empty), (unset)"
            )
            value = stated.strip("`")
            for placeholder, directory in RUN_TIME_DIRS.items():
                value = value.replace(placeholder, directory)
            clean_environment.setenv(variable, value)
            read = getattr(Settings(_env_file=None), name)
            clean_environment.delenv(variable)
            assert read == default, f"SKILL.md gives {variable} = {read!r}; the code's default is {default!r}"


def test_settings_precedence_is_the_documented_one(clean_environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What config.py, README.md and SKILL.md state: the environment wins over .env.local, which wins over .env."""
    clean_environment.chdir(tmp_path)
    (tmp_path / ".env").write_text("RERANK_MAX_DOCUMENTS=1\nRERANK_MAX_QUERY_CHARS=1\nRERANK_MAX_DOCUMENT_CHARS=1\n")
    (tmp_path / ".env.local").write_text("RERANK_MAX_DOCUMENTS=2\nRERANK_MAX_QUERY_CHARS=2\n")
    clean_environment.setenv("RERANK_MAX_DOCUMENTS", "3")
    settings = Settings()
    assert (settings.max_documents, settings.max_query_chars, settings.max_document_chars) == (3, 2, 1)


def test_readme_shows_the_two_setup_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "scripts/start.sh" in readme and "scripts/test.sh" in readme


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    """The app as the tests build it; creating it loads no model."""
    return create_app(Settings(_env_file=None, log_path=tmp_path / "log.jsonl"))


def serves(app: FastAPI, method: str, path: str) -> bool:
    """Whether a request would reach a route, matched the way the app matches it."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


def test_skill_route_table_describes_every_route(app: FastAPI) -> None:
    skill = (REPO / "SKILL.md").read_text()
    table_cells = [line.split("|")[1] for line in skill.splitlines() if line.startswith("| `")]
    described = {(match["method"], match["path"]) for cell in table_cells for match in ROUTE_MENTION.finditer(cell)}
    schema = app.openapi()["paths"]
    routes = {(method.upper(), path) for path, operations in schema.items() for method in operations}
    assert not routes - described, f"routes missing from SKILL.md's route table: {sorted(routes - described)}"


def test_every_route_the_docs_name_exists(app: FastAPI) -> None:
    for doc in DOCS:
        for match in ROUTE_MENTION.finditer(doc.read_text()):
            assert serves(app, match["method"], match["path"]), (
                f"{doc.relative_to(REPO)} names {match[0]}, which the app does not serve"
            )


def cli_commands(parser: argparse.ArgumentParser, parent: str = "rerank-sidecar") -> list[tuple[str, str]]:
    """Every sub-command at any depth, as (parent, name): ("rerank-sidecar", "bench"), ("bench", "load")."""
    commands = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                commands += [(parent, name), *cli_commands(subparser, name)]
    return commands


def mentioned_after(parent: str, text: str) -> set[str]:
    """Names written after `parent`: `bench load` and `bench load|quality` both mention load."""
    words = re.findall(rf"(?<![\w/-]){re.escape(parent)} ([a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*)", text)
    return {name for alternatives in words for name in alternatives.split("|")}


def test_readme_names_every_cli_command() -> None:
    readme = (REPO / "README.md").read_text()
    commands = cli_commands(build_parser())
    assert ("bench", "load") in commands  # the walk reaches the nested sub-commands
    missing = [f"{parent} {name}" for parent, name in commands if name not in mentioned_after(parent, readme)]
    assert not missing, f"README.md never names: {missing}"


def test_docs_show_every_key_ensure_prints() -> None:
    keys = list(EnsureResult.model_fields)
    readme_line = re.search(r"rerank-sidecar ensure +# prints \{(?P<keys>[^}]*)\}", (REPO / "README.md").read_text())
    assert readme_line, "README.md: show `rerank-sidecar ensure   # prints {...}` with the keys it prints"
    assert re.findall(r'"(\w+)"', readme_line["keys"]) == keys, f"README.md: ensure prints {keys}"
    example = re.search(r'^\{"url".*\}$', (REPO / "docs" / "ensure.md").read_text(), re.MULTILINE)
    assert example and list(json.loads(example[0])) == keys, f"docs/ensure.md's example line: ensure prints {keys}"


def test_docs_link_only_to_files_in_the_repository() -> None:
    """Markdown links and `../` paths resolve to files of this repository, so they work in any clone."""
    for doc in DOCS:
        text = doc.read_text()
        targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"`(\.\./[^`\s]+)`", text)
        for target in targets:
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            resolved = (doc.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(REPO) and resolved.exists(), (
                f"{doc.relative_to(REPO)} links {target}, which is not a file of this repository"
            )
