"""Which wire dialect a request speaks, decided once per request; every answer and every error follows it.

`POST /rerank` takes two bodies, as llama.cpp's server does: text-embeddings-inference's, which
names its documents `texts`, and the native one. `POST /embed` is TEI's and `POST /v1/embeddings`
OpenAI's, whatever their body (`ROUTE_DIALECTS`); every other route speaks the native dialect.
The decision is made before any layer can answer: `RequestContextMiddleware` first calls
`decide_dialect`, which reads the top-level keys in the body's first `PEEK_BYTES` (`body_dialect`:
a TEI body holds `texts` and no `documents`). So the 401 of the API key and the 413 of the body
limit, given before the body is read in full, come in the request's dialect too. The decision
lives in a context variable for the length of the request: the body's validation
(routes.RerankBody), the error handlers, the API key and body limit middlewares and the 500 of an
unexpected exception all read `current_dialect`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import Enum

from starlette.types import Message, Receive, Scope


class Dialect(str, Enum):
    """A wire contract's shapes of answers and errors."""

    NATIVE = "native"
    """`{"error": {"type", "message"}}` errors; every route."""
    TEI = "text-embeddings-inference"
    """TEI's `{"error", "error_type"}` errors and bare-array answers; `POST /rerank` with `texts`, `POST /embed`."""
    OPENAI = "openai"
    """OpenAI's `{"error": {"message", "type", "param", "code"}}` errors; `POST /v1/embeddings`."""


# Routes whose dialect is theirs whatever the body.
ROUTE_DIALECTS = {("POST", "/embed"): Dialect.TEI, ("POST", "/v1/embeddings"): Dialect.OPENAI}


# The one route whose dialect depends on its body.
TWO_DIALECT_ROUTE = ("POST", "/rerank")

# Bytes of the body read to decide. They reach the documents' key of any body whose query and
# instruction (RERANK_MAX_QUERY_CHARS, 10,000 characters by default) come first as plain text; a
# body whose deciding key lies further is judged on the keys before it. They are read before the
# API key is checked, so an unauthenticated request holds no more than this.
PEEK_BYTES = 64 * 1024

_current: ContextVar[Dialect] = ContextVar("rerank_sidecar_dialect", default=Dialect.NATIVE)

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def current_dialect() -> Dialect:
    """The dialect of the request being handled (native outside a request)."""
    return _current.get()


def body_dialect(prefix: bytes) -> Dialect:
    """TEI's when the top-level keys in `prefix` (a body's first bytes) hold `texts` and not `documents`."""
    has_texts = False
    for key in top_level_keys(prefix):
        if key == "documents":
            return Dialect.NATIVE
        has_texts = has_texts or key == "texts"
    return Dialect.TEI if has_texts else Dialect.NATIVE


def top_level_keys(prefix: bytes) -> Iterator[str]:
    """The keys of the JSON object `prefix` opens, in order, as far as it goes whole; values are skipped unread.

    A value the prefix cuts, or anything that is not JSON, ends the keys.
    """
    text = prefix.decode("utf-8", "ignore")  # "ignore": the prefix may cut a character in two
    at = _SPACE.match(text).end()
    if text[at:at + 1] != "{":
        return
    at += 1
    try:
        while True:
            at = _SPACE.match(text, at).end()
            if text[at:at + 1] != '"':
                return
            key, at = json.decoder.scanstring(text, at + 1)
            at = _SPACE.match(text, at).end()
            if text[at:at + 1] != ":":
                return
            yield key
            _, at = _DECODER.raw_decode(text, _SPACE.match(text, at + 1).end())  # C speed, like json.loads
            at = _SPACE.match(text, at).end()
            if text[at:at + 1] != ",":
                return
            at += 1
    except ValueError:  # a string or value the prefix cuts, or not JSON
        return


async def decide_dialect(scope: Scope, receive: Receive) -> tuple[Dialect, Receive]:
    """The request's dialect, and a receive channel that replays the body bytes read to decide it."""
    route = (scope["method"], scope["path"])
    if route != TWO_DIALECT_ROUTE:
        return ROUTE_DIALECTS.get(route, Dialect.NATIVE), receive
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

    return body_dialect(prefix), replay


@contextmanager
def speaking(dialect: Dialect) -> Iterator[None]:
    """Makes `dialect` the current one for the request handled inside the block."""
    token = _current.set(dialect)
    try:
        yield
    finally:
        _current.reset(token)
