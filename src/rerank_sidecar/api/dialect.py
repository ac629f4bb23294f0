"""Which wire dialect a request speaks, decided once per request; every answer and every error follows it.

`POST /rerank` takes two bodies, as llama.cpp's server does: text-embeddings-inference's, which names
its documents `texts`, and the native one. Every other route speaks the native dialect. The decision
is made before any layer can answer: `RequestContextMiddleware` calls `decide_dialect` first, which
reads the top-level keys in the body's first `PEEK_BYTES` (a TEI body holds `texts` and no
`documents`). So the 401 of the API key and the 413 of the body limit, given before the body is read
in full, come in the request's dialect too. The decision lives in a context variable for the length
of the request: the body's validation (routes.RerankBody), the error handlers, the API key and body
limit middlewares and the 500 of an unexpected exception all read `current_dialect`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import Enum

from starlette.types import Message, Receive, Scope


class Dialect(str, Enum):
    """A wire contract's shapes of answers and errors."""

    NATIVE = "native"
    """`{"error": {"type", "message"}}` errors; every route."""
    TEI = "text-embeddings-inference"
    """TEI's `{"error", "error_type"}` errors and bare-array answers; `POST /rerank` with `texts`."""


# The one route whose dialect depends on its body.
TWO_DIALECT_ROUTE = ("POST", "/rerank")

# Bytes of the body read to decide: they hold the top-level keys of any body within the limits
# (a query and an instruction of RERANK_MAX_QUERY_CHARS each come before the documents at worst),
# and reading them costs an unauthenticated client no more than one socket read.
PEEK_BYTES = 64 * 1024

_current: ContextVar[Dialect] = ContextVar("rerank_sidecar_dialect", default=Dialect.NATIVE)

# A whole JSON string, a string cut short by the end of the bytes, or a bracket or colon.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|"|[{}\[\]:]', re.DOTALL)


def current_dialect() -> Dialect:
    """The dialect of the request being handled (native outside a request)."""
    return _current.get()


def dialect_of_keys(keys: Collection[str]) -> Dialect:
    """TEI's when a body's top-level keys hold `texts` and not `documents`; native otherwise."""
    return Dialect.TEI if "texts" in keys and "documents" not in keys else Dialect.NATIVE


def top_level_keys(prefix: bytes) -> set[str]:
    """The keys of the JSON object that `prefix` opens, as far as it goes; nested objects' keys are not counted."""
    keys: set[str] = set()
    depth, last_string = 0, None
    for match in _JSON_TOKEN.finditer(prefix):
        token = match.group()
        if token == b'"':
            break  # a string the prefix cuts: nothing after its opening quote is structure
        if token in (b"{", b"["):
            depth += 1
        elif token in (b"}", b"]"):
            depth -= 1
        elif token == b":" and depth == 1 and last_string is not None:
            keys.add(_decoded_key(last_string))
        last_string = token if token.startswith(b'"') else None
    return keys


def _decoded_key(token: bytes) -> str:
    try:
        return json.loads(token)
    except ValueError:  # invalid escapes or UTF-8: no key a dialect looks for
        return ""


async def decide_dialect(scope: Scope, receive: Receive) -> tuple[Dialect, Receive]:
    """The request's dialect, and a receive channel that replays the body bytes read to decide it."""
    if (scope["method"], scope["path"]) != TWO_DIALECT_ROUTE:
        return Dialect.NATIVE, receive
    peeked: list[Message] = []
    size = 0
    while size < PEEK_BYTES:
        message = await receive()
        peeked.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    prefix = b"".join(message.get("body", b"") for message in peeked)[:PEEK_BYTES]

    async def replay() -> Message:
        return peeked.pop(0) if peeked else await receive()

    return dialect_of_keys(top_level_keys(prefix)), replay


@contextmanager
def speaking(dialect: Dialect) -> Iterator[None]:
    """Makes `dialect` the current one for the request handled inside the block."""
    token = _current.set(dialect)
    try:
        yield
    finally:
        _current.reset(token)
