"""The one-lock baseline that `bench load --one-lock` measures the sidecar against: the seed's design.

FastAPI, one sentence-transformers CrossEncoder, and one asyncio.Lock around its `predict`: each
request is scored whole, in sentence-transformers' own batches, while every other request waits.
It answers only what the load generator needs (`/health`, `/warmup`, `/rerank` with scores).

    python -m rerank_sidecar.bench.support.onelock --model DIR --port N [--host H] [--threads T]
"""

from __future__ import annotations

import argparse
import asyncio

from pydantic import BaseModel, Field

# sentence-transformers' default predict batch size, as the seed called it.
PREDICT_BATCH_SIZE = 32


class OneLockRequest(BaseModel):
    """The part of /rerank's body the baseline reads."""

    query: str = Field(description="The query.")
    documents: list[str] = Field(description="Documents to score against it.")


class OneLockResponse(BaseModel):
    """Raw scores in the documents' order."""

    scores: list[float] = Field(description="The cross-encoder's logit per document.")


def create_app(model_dir: str, threads: int):  # -> fastapi.FastAPI
    """The baseline's app around a CrossEncoder loaded from `model_dir` on the CPU."""
    import torch
    from fastapi import FastAPI
    from sentence_transformers import CrossEncoder

    if threads:
        torch.set_num_threads(threads)
    model = CrossEncoder(model_dir, device="cpu", local_files_only=True, activation_fn=torch.nn.Identity())
    lock = asyncio.Lock()
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/warmup")
    async def warmup() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/rerank")
    async def rerank(body: OneLockRequest) -> OneLockResponse:
        pairs = [(body.query, document) for document in body.documents]
        async with lock:
            scores = await asyncio.to_thread(model.predict, pairs, batch_size=PREDICT_BATCH_SIZE)
        return OneLockResponse(scores=[float(score) for score in scores])

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="cross-encoder directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    uvicorn.run(create_app(args.model, args.threads), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
