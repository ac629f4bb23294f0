"""A model's life stages, torch-free, so the HTTP schemas and the client name them without loading the engine."""

from __future__ import annotations

from typing import Literal

ModelState = Literal["idle", "loading", "ready", "unloading", "error"]
"""Where a model is in its life; /health reports it as `status`."""
