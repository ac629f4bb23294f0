"""LRU cache of raw scores, so a pair seen before is not scored again."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from cachetools import LRUCache


@dataclass(frozen=True, slots=True)
class DocumentScore:
    """One document's result: what the engine answers about it, and what the cache keeps to skip scoring it again."""

    raw: float
    """The document's raw score (best window)."""
    truncated: bool
    """Whether part of the document went unscored."""
    tokens: int
    """Tokens the document's windows held (for usage accounting)."""


def cache_key(*parts: str) -> bytes:
    """A digest of the parts, unambiguous about where one part ends and the next begins."""
    digest = hashlib.blake2b(digest_size=20)
    for part in parts:
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.digest()


class ScoreCache:
    """Thread-safe LRU keyed by a digest of model, revision, scoring options, query and document."""

    def __init__(self, capacity: int) -> None:
        self._entries: LRUCache[bytes, DocumentScore] = LRUCache(maxsize=capacity)
        self._lock = threading.Lock()

    def get(self, key: bytes) -> DocumentScore | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: bytes, value: DocumentScore) -> None:
        with self._lock:
            self._entries[key] = value
