"""Docs that match the code: every setting documented, the two set-up commands shown, every route described."""

from __future__ import annotations

from pathlib import Path

from rerank_sidecar.api.app import create_app
from rerank_sidecar.config import Settings

REPO = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented_in_env_example_and_skill() -> None:
    env_example = (REPO / ".env.example").read_text()
    skill = (REPO / "SKILL.md").read_text()
    for name in Settings.model_fields:
        variable = f"RERANK_{name.upper()}"
        assert f"{variable}=" in env_example, f"{variable} missing from .env.example"
        assert f"`{variable}`" in skill, f"{variable} missing from SKILL.md"


def test_readme_shows_the_two_setup_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "scripts/start.sh" in readme and "scripts/test.sh" in readme


def test_skill_describes_every_route(tmp_path) -> None:
    skill = (REPO / "SKILL.md").read_text()
    app = create_app(Settings(log_path=tmp_path / "log.jsonl"))
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            assert f"{method.upper()} {path}" in skill, f"{method.upper()} {path} missing from SKILL.md"
