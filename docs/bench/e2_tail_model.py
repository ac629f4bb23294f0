"""A model of E2 (32 closed-loop clients, one query a request) against the sidecar's batcher, in simulated time.

It asks how much of E2's p99 over the Little's-law mean the batching rule itself makes, and how much
the machine's noise makes (docs/bench/embed-issue21.md, "E2's p99: a model of the batcher").

- Each client builds and sends a request, then reads the answer, on one event loop (a serial queue);
  the sidecar parses it and later writes the answer on another.
- The batcher takes every waiting query into one round as soon as the last round ends; a round of
  n queries costs `pass_ms + text_ms * n`.
- Costs come from the 2-core EPYC (issue #21). On an idle machine a pass of short queries took 2-3 ms
  plus about 0.7 ms a query. Under E2's load the model used 0.7 cores at about 450 queries/s, about 1.6 ms
  of CPU a query. Per request, the sidecar's event loop used about 0.65 ms and the load generator's
  about 1.3 ms (0.6 cores), split here between each loop's two steps.
- `jitter` stretches or shrinks every cost at random by up to that fraction: how unevenly the
  2 cores, shared by the model's threads, the sidecar's event loop and the load generator, run each step.

Run: `python docs/bench/e2_tail_model.py` (standard library only; a few seconds).
"""

from __future__ import annotations

import heapq
import itertools
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Costs:
    """Milliseconds each step takes before jitter."""

    pass_ms: float = 3.0
    """One forward pass, beyond its queries."""
    text_ms: float = 1.6
    """Each query in a pass."""
    server_in_ms: float = 0.35
    """The sidecar's event loop reading, validating and tokenizing one request."""
    server_out_ms: float = 0.3
    """The sidecar's event loop writing one answer."""
    client_send_ms: float = 0.6
    """The load generator building and sending one request."""
    client_read_ms: float = 0.7
    """The load generator reading one answer."""


@dataclass(frozen=True)
class Outcome:
    """What the clients measured."""

    texts_per_s: float
    """Answers per second."""
    mean_ms: float
    """Mean latency."""
    p99_ms: float
    """99th percentile latency."""
    little_ms: float
    """Clients over answers per second: the mean a closed loop must show."""
    round_mean: float
    """Queries per round."""
    round_sd: float
    """Their standard deviation."""

    @property
    def ratio(self) -> float:
        """E2's target measure: p99 over the Little's-law mean (issue #21 asks for at most 1.4)."""
        return self.p99_ms / self.little_ms


def simulate(jitter: float, costs: Costs = Costs(), clients: int = 32, max_round: int = 10**9,
             seconds: float = 60.0, seed: int = 1) -> Outcome:
    """E2 for `seconds` of simulated time; the first tenth is left out as warm-up."""
    rng = random.Random(seed)
    events: list[tuple[float, int, Callable[..., None], tuple]] = []
    order = itertools.count()

    def at(time: float, step: Callable[..., None], *args: object) -> None:
        heapq.heappush(events, (time, next(order), step, args))

    def cost(ms: float) -> float:
        return ms * (1 + rng.uniform(-jitter, jitter))

    class EventLoop:
        """Runs one step at a time, in the order they were asked for."""

        def __init__(self) -> None:
            self.free_at = 0.0

        def run(self, now: float, ms: float, then: Callable[..., None], *args: object) -> None:
            self.free_at = max(now, self.free_at) + cost(ms)
            at(self.free_at, then, *args)

    generator, sidecar = EventLoop(), EventLoop()
    waiting: list[float] = []  # each waiting query's send time
    running = [False]
    answered: list[tuple[float, float]] = []  # (answer time, latency)
    rounds: list[int] = []

    def send(now: float) -> None:
        generator.run(now, costs.client_send_ms, arrive, now)

    def arrive(now: float, sent: float) -> None:
        sidecar.run(now, costs.server_in_ms, enqueue, sent)

    def enqueue(now: float, sent: float) -> None:
        waiting.append(sent)
        if not running[0]:
            start_round(now)

    def start_round(now: float) -> None:
        taken = waiting[:max_round]
        del waiting[:max_round]
        running[0] = True
        rounds.append(len(taken))
        at(now + cost(costs.pass_ms + costs.text_ms * len(taken)), end_round, taken)

    def end_round(now: float, taken: list[float]) -> None:
        running[0] = False
        for sent in taken:
            sidecar.run(now, costs.server_out_ms, reply, sent)
        if waiting:
            start_round(now)

    def reply(now: float, sent: float) -> None:
        generator.run(now, costs.client_read_ms, read, sent)

    def read(now: float, sent: float) -> None:
        answered.append((now, now - sent))
        send(now)

    end_ms = seconds * 1000
    for _ in range(clients):
        at(rng.uniform(0, 20), send)
    while events:
        now, _, step, args = heapq.heappop(events)
        if now > end_ms:
            break
        step(now, *args)

    latencies = sorted(latency for time, latency in answered if time > end_ms / 10)
    per_s = len(latencies) / (end_ms * 0.9 / 1000)
    return Outcome(
        texts_per_s=per_s, mean_ms=statistics.mean(latencies), p99_ms=latencies[int(len(latencies) * 0.99)],
        little_ms=clients / per_s * 1000, round_mean=statistics.mean(rounds), round_sd=statistics.pstdev(rounds),
    )


def main() -> None:
    print("| cost jitter | round cap | texts/s | mean ms | p99 ms | p99 / Little's-law mean | queries a round |")
    print("|---|---|---|---|---|---|---|")
    for jitter in (0.0, 0.3, 0.5, 0.7):
        for max_round in (10**9, 8):
            outcome = simulate(jitter, max_round=max_round)
            cap = "none" if max_round == 10**9 else str(max_round)
            print(f"| ±{jitter:.0%} | {cap} | {outcome.texts_per_s:.0f} | {outcome.mean_ms:.1f} | {outcome.p99_ms:.1f} | "
                  f"{outcome.ratio:.2f} | {outcome.round_mean:.1f} ± {outcome.round_sd:.1f} |")


if __name__ == "__main__":
    main()
