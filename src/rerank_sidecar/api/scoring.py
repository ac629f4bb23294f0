"""The one way every rerank dialect reaches the engine: a parsed `ScoringRequest` in, one `Scored` per query out.

Each dialect (routes.py: native /rerank and /rerank/batch; tei.py; compat.py) only parses its body
into a `ScoringRequest` and shapes the `Scored` it gets back; `score` does what lies between: picks
the engine, checks the limits, notes the request for its log line, and awaits the jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fastapi import Request

from ..engine.engine import RerankJob, RerankOutcome
from .dispatch import pick_engine, rerank_outcomes
from .limits import check_scoring_request
from .request_notes import note_request


@dataclass(frozen=True, slots=True)
class FieldNames:
    """What an error calls one job's query and documents in the request's own terms."""

    query: str = "query"
    """The query's field, e.g. `groups.1.query`."""
    documents: str = "documents"
    """The documents' field, e.g. `texts`; a document is named `<documents>.<index>`."""


@dataclass(frozen=True, slots=True)
class ScoringRequest:
    """A rerank call as its dialect parsed it: which model, what to score, how to answer, what errors call things."""

    model: str | None
    """The model the body names; None or empty: the default."""
    jobs: Sequence[RerankJob]
    """One per query, in request order; they share the scheduler's batches."""
    raw_scores: bool = False
    """Answer raw model scores instead of [0, 1] relevance."""
    fields: Sequence[FieldNames] = (FieldNames(),)
    """Per job, the names errors use for its query and documents."""
    all_documents_field: str = "documents"
    """The field an error names when the jobs' documents together are over RERANK_MAX_DOCUMENTS."""


@dataclass(frozen=True, slots=True)
class Scored:
    """One job's outcome, with its scores in the scale the request asked for."""

    outcome: RerankOutcome
    """What the engine returned: both scales, truncation, tokens and the model."""
    scores: list[float] = field(repr=False)
    """Raw scores or [0, 1] relevance, as the request asked, in input order."""


async def score(request: Request, scoring: ScoringRequest) -> list[Scored]:
    """Scores every job of the request on the model it names; one `Scored` per job, in order."""
    engine = pick_engine(request, scoring.model)
    settings = engine.settings
    check_scoring_request(settings, scoring)
    for job in scoring.jobs:
        note_request(request, job.query, job.documents, settings)
    outcomes = await rerank_outcomes(request, engine, scoring.jobs)
    return [
        Scored(outcome, (outcome.raw if scoring.raw_scores else outcome.relevance).tolist()) for outcome in outcomes
    ]
