"""The one way every embedding dialect reaches the engine: a parsed `EmbeddingRequest` in, an `EmbedOutcome` out.

Each dialect (openai_compat.py: /v1/embeddings; compat.py: Cohere's /v2/embed; tei.py: /embed)
only parses its body into an `EmbeddingRequest` and shapes the outcome; `embed` does what lies
between, as scoring.py does for rerank: picks the engine, checks the limits, notes the request
for its log line, awaits the job (cancelled if the client goes away), and
turns the engine's refusals of a field into 400s naming that field in the request's own terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request

from ..engine.engine import EmbedJob, EmbedOutcome, TruncationSide
from ..engine.errors import DimensionsTooLarge, TextTooLong, UnknownPrompt
from .dispatch import pick_engine, until_disconnect
from .errors import ApiError
from .limits import check_embed_inputs
from .request_notes import note_model, note_texts


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """An embedding call as its dialect parsed it: which model, what to embed, how, and what errors call things."""

    model: str | None
    """The model the body names; None or empty: the default."""
    texts: Sequence[str]
    """The texts to embed, in request order."""
    texts_field: str
    """The texts' field (input, texts, inputs); a text is named `<texts_field>.<index>`."""
    truncate: bool | None = None
    """Cut a text longer than the model's window; False: 400 naming it; None: RERANK_AUTO_TRUNCATE."""
    truncation_side: TruncationSide = "right"
    """Which end of a long text is cut: right keeps its start."""
    truncate_hint: str = "start the sidecar with RERANK_AUTO_TRUNCATE=true to cut it"
    """How the caller gets an over-long text cut, for the 400 that refuses it."""
    prompt_name: str | None = None
    """A key of the model's prompts; None: the model's default prompt (or none)."""
    prompt: str | None = None
    """A literal prompt put before each text, winning over prompt_name ("" : no prompt at all)."""
    prompt_if_known: bool = False
    """True: a prompt_name the model lacks means no prompt (an input type); False: 400 naming `prompt_field`."""
    prompt_field: str = "prompt_name"
    """The field that chose the prompt."""
    dimensions: int | None = None
    """Keep the first n dimensions, then re-normalize; None: all."""
    dimensions_field: str = "dimensions"
    """The field that asked for dimensions."""
    normalize: bool | None = None
    """L2-normalize each vector; None: as the model says."""


async def embed(request: Request, embedding: EmbeddingRequest) -> EmbedOutcome:
    """Embeds every text of the request on the model it names; vectors in request order."""
    engine = pick_engine(request, embedding.model)
    settings = engine.settings
    check_embed_inputs(settings, embedding.texts, embedding.texts_field)
    note_texts(request, embedding.texts, settings)
    job = EmbedJob(
        texts=embedding.texts,
        prompt_name=embedding.prompt_name,
        prompt=embedding.prompt,
        prompt_if_known=embedding.prompt_if_known,
        truncate=settings.auto_truncate if embedding.truncate is None else embedding.truncate,
        truncation_side=embedding.truncation_side,
        dimensions=embedding.dimensions,
        normalize=embedding.normalize,
    )
    try:
        outcome = await until_disconnect(request, engine.embed(job))
    except TextTooLong as too_long:
        # The engine's message starts with the text's index: "<index>: this text needs ..."
        raise ApiError(
            400, "input_too_long", f"{embedding.texts_field}.{too_long} ({embedding.truncate_hint})",
            param=f"{embedding.texts_field}.{too_long.index}",
        ) from too_long
    except DimensionsTooLarge as too_large:
        field = embedding.dimensions_field
        raise ApiError(400, "validation_error", f"{field}: {too_large}", param=field) from too_large
    except UnknownPrompt as unknown:
        field = embedding.prompt_field
        raise ApiError(400, "validation_error", f"{field}: {unknown}", param=field) from unknown
    note_model(request, outcome.info.model, outcome.info.revision)
    return outcome

