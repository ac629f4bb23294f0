"""The batch budget: how many pairs one forward pass may hold, and the planner that cuts pairs into passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from ..config import Settings
from ..models.base import EncodedPair, ScorerInfo, SharedPrefix

# A CPU scores fastest when a batch's activations stay in cache: on a 2-core EPYC, MiniLM-L6 went
# from 25 pairs/s at 16384 tokens per batch to 45 at 1024-2048 (torch and onnx alike). A GPU wants
# big batches to fill its cores.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "gpu": 16384}

# What one more forward pass costs beyond its tokens, in tokens of work. On the 2-core EPYC, a
# MiniLM-L6 pass of n pairs x 64 tokens took about 3.3 ms + n x 12.3 ms on onnxruntime (the pass is
# worth about 16 tokens) and 13-19 ms + n x 15 ms on torch (about 64 tokens): splitting a batch
# where lengths jump pays, more so on onnxruntime. A GPU pass costs about the same for any batch
# until its cores fill (not measured here: no GPU was lent), so there the budget alone splits.
PASS_OVERHEAD_TOKENS = {"onnx": 16, "torch": 64, "gpu": 4096}


@dataclass(frozen=True, slots=True)
class BatchBudget:
    """Limits of one forward pass."""

    max_tokens: int
    """Padded tokens (longest pair x pairs) one batch may hold."""
    max_pairs: int
    """Pairs one batch may hold."""
    pass_overhead_tokens: int = PASS_OVERHEAD_TOKENS["onnx"]
    """What one more forward pass costs beyond its padded tokens, in tokens."""
    embed_share: float = 1.0
    """Most of a round's `max_tokens` that embedding texts take while rerank pairs wait (RERANK_EMBED_SHARE)."""

    @classmethod
    def for_scorer(cls, settings: Settings, scorer: ScorerInfo) -> BatchBudget:
        """The budget of `settings` for this scorer: RERANK_MAX_BATCH_TOKENS=0 resolved for its device."""
        on_cpu = scorer.device == "cpu"
        return cls(settings.max_batch_tokens or DEFAULT_BATCH_TOKENS["cpu" if on_cpu else "gpu"],
                   settings.max_batch_pairs, PASS_OVERHEAD_TOKENS[scorer.backend if on_cpu else "gpu"],
                   settings.embed_share)

    @property
    def max_embed_tokens(self) -> int:
        """Padded tokens of embedding texts a round holds while rerank pairs wait."""
        return int(self.max_tokens * self.embed_share)

    def admits(self, size: int, longest: int, cost: int) -> bool:
        """Whether a batch of `size` pairs whose longest has `longest` tokens can take a pair of `cost` tokens."""
        if size == 0:
            return True  # a pair longer than the budget still gets a batch of its own
        return size < self.max_pairs and max(longest, cost) * (size + 1) <= self.max_tokens

    def padded_work(self, costs: Sequence[int]) -> int:
        """Padded tokens of pairs of these `costs` (longest first) cut into batches in turn, each filled while
        `admits` takes the next pair: the work of one round, which the round holds within `max_tokens`."""
        work, longest, rows = 0, 0, 0
        for cost in costs:
            if not self.admits(rows, longest, cost):
                work, longest, rows = work + longest * rows, 0, 0
            longest, rows = max(longest, cost), rows + 1
        return work + longest * rows

    def plan_pairs(self, pairs: Sequence[EncodedPair]) -> list[list[int]]:
        """`plan` of these pairs: their costs, and their shared prefixes' passes."""
        return self.plan([pair.cost for pair in pairs], [pair.prefix for pair in pairs])

    def plan(self, costs: Sequence[int], prefixes: Sequence[SharedPrefix | None] = ()) -> list[list[int]]:
        """Indexes of `costs` in batches within the budget, longest first, cut where the work is least.

        The pairs are sorted by length and cut into consecutive runs; of all such cuts within the
        budget, the one with the fewest padded tokens plus `pass_overhead_tokens` per pass wins
        (dynamic programming over the cut points, each batch at most `max_pairs` long). `prefixes`,
        when given, are the pairs' shared prefixes: the batch holding a prefix's first pair runs its
        pass, so that batch is charged the prefix's `pass_tokens` too (a one-document Qwen3 request
        on a DL20 passage: a 146-token prompt, cost 9, prefix pass 106 after the 39 held).
        """
        order = sorted(range(len(costs)), key=lambda i: -costs[i])
        longest = [costs[i] for i in order]
        charges = prefix_pass_tokens([prefixes[i] for i in order]) if prefixes else [0] * len(order)
        charged = list(accumulate(charges, initial=0))  # charged[j]: prefix passes of the first j pairs
        overhead = self.pass_overhead_tokens
        least_work = [0] * (len(order) + 1)  # least_work[j]: to score the first j pairs
        last_start = [0] * (len(order) + 1)  # last_start[j]: where that cut's last batch begins
        for end in range(1, len(order) + 1):
            alone = longest[end - 1] + charges[end - 1]
            least_work[end], last_start[end] = least_work[end - 1] + overhead + alone, end - 1
            for first in range(end - 2, max(-1, end - 1 - self.max_pairs), -1):
                work = longest[first] * (end - first) + charged[end] - charged[first]
                if work > self.max_tokens:
                    break  # batches starting earlier are longer, longer-padded and run as many passes still
                if least_work[first] + overhead + work < least_work[end]:
                    least_work[end], last_start[end] = least_work[first] + overhead + work, first
        batches: list[list[int]] = []
        end = len(order)
        while end > 0:
            batches.append(order[last_start[end] : end])
            end = last_start[end]
        return batches[::-1]


def prefix_pass_tokens(prefixes: Sequence[SharedPrefix | None]) -> list[int]:
    """Per pair, in the order run: its prefix's `pass_tokens` at the prefix's first pair, 0 elsewhere."""
    seen: set[int] = set()
    charges: list[int] = []
    for prefix in prefixes:
        if prefix is None or id(prefix) in seen:
            charges.append(0)
        else:
            seen.add(id(prefix))
            charges.append(prefix.pass_tokens)
    return charges


def padded_tokens(costs: Sequence[int]) -> int:
    """What a batch of pairs of these costs holds once padded: its longest pair's cost x its pairs."""
    return max(costs) * len(costs)
