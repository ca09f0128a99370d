"""Cost-aware draft counts for FreeDave: how many drafts per row make a call fastest. Pure Python.

    policy = CostAwareDrafts(max_drafts=8)                 # keep one per model and serve many calls with it
    out = generate(model, prompts, method="freedave", draft_steps=8, draft_policy=policy, ...)

A FreeDave round that drafts d states per row feeds about R*d rows to the model and advances each row by its
accepted count; static decoding feeds R rows and advances each by one. Whether drafts pay depends on how a
call's time grows with its rows (flat on a GPU up to a large batch, nearly linear on a CPU) and on how many
drafts verify, neither of which is known in advance. So the policy measures what it optimises: each `generate`
call runs with one draft count d for the whole call (d = 1 is the static code path itself, with nothing
added), and its answer tokens per second of wall time are recorded for d. Calls are grouped by context, the
row length and the batch size, each rounded up to a power of two; per context and d the median of the last
`window` rates is the estimate.

The choice is a local search from static. Static is measured first and is the d in use. Its neighbours d - 1
and d + 1 are tried, each once to begin with and then again after a wait of calls of the context: a
neighbour that loses has its wait doubled (from `explore_every`), and made at least loss / `explore_cost`
calls (a neighbour 30% slower is retried after 30 calls or more, so that retries cost about 1% of the time),
up to 16 times `explore_every` (so a change of load is still noticed). Whichever d has a median above the one
in use by more than `margin` (3%), over at least `min_samples` calls (2; a neighbour that looks better after
one call is measured again at once), takes over, and its own neighbours are tried in turn, so the search
climbs to the best d wherever it is. Throughput against d rises to a peak and falls (deeper drafts verify less
often, and their rows cost as much), which is what a local search needs.

Continuous batching (`decode_stream`, where rows join and leave between forwards, so there is no call to time)
asks per segment of `rounds` (8) FreeDave rounds instead: a segment runs one d, and its wall time (bookkeeping
included) and the tokens it advanced are the measurement (one round, a few milliseconds, is too noisy a
unit); d = 1 is a round of one draft per row, i.e. a static step.

What it learns stays in the object, so a long-lived policy (one per served model) pays the search once. The
output never depends on it (any number of drafts verifies to static's output); only NFE and speed do.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from typing import Callable


class CostAwareDrafts:
    def __init__(self, max_drafts: int = 8, *, window: int = 8, explore_every: int = 8, margin: float = 0.03,
                 explore_cost: float = 0.01, min_samples: int = 2, rounds: int = 8,
                 clock: Callable[[], float] = time.perf_counter):
        if max_drafts < 1:
            raise ValueError(f"max_drafts: must be >= 1, got {max_drafts}")
        if window < 1:
            raise ValueError(f"window: must be >= 1, got {window}")
        if explore_every < 1:
            raise ValueError(f"explore_every: must be >= 1, got {explore_every}")
        if margin < 0:
            raise ValueError(f"margin: must be >= 0, got {margin}")
        if rounds < 1:
            raise ValueError(f"rounds: must be >= 1, got {rounds}")
        if explore_cost <= 0:
            raise ValueError(f"explore_cost: must be > 0, got {explore_cost}")
        self.k, self.window, self.explore_every, self.clock = max_drafts, window, explore_every, clock
        self.margin, self.explore_cost, self.min_samples = margin, explore_cost, max(1, min_samples)
        self.rounds = rounds  # continuous batching: rounds decoded with one pick, timed together
        self.incumbent: dict[tuple, int] = {}                  # context -> the d in use
        self.rates: dict[tuple, dict[int, list[float]]] = {}  # context -> {d: the last tokens/s}
        self.calls: dict[tuple, int] = {}                      # context -> calls so far
        self.retry: dict[tuple, tuple[int, int]] = {}          # (*context, d) -> (next try, wait)
        self.picks: Counter = Counter()                        # d -> calls it was picked for

    @staticmethod
    def context(row_tokens: int, rows: int, unit: str = "call") -> tuple[str, int, int]:
        """Calls that share a policy estimate: the unit timed (a whole `generate` "call", or one "round" of
        continuous batching), and the row length and the rows, each rounded up to a power of two."""
        return unit, _power_of_two(row_tokens), _power_of_two(rows)

    def best(self, context: tuple[str, int, int]) -> int:
        """The draft count in use in `context` (1 before any is measured)."""
        return self.incumbent.get(context, 1)

    def choose(self, row_tokens: int, rows: int, unit: str = "call") -> int:
        """Drafts per row for the next call (or round) of `rows` rows of `row_tokens` tokens (1 = static)."""
        ctx = self.context(row_tokens, rows, unit)
        calls, best = self.calls.get(ctx, 0), self.best(ctx)
        self.calls[ctx] = calls + 1
        pick = best
        if best in self.rates.get(ctx, {}):  # (static is measured first)
            pick = next((d for d in (best + 1, best - 1)
                         if 1 <= d <= self.k and calls >= self.retry.get((*ctx, d), (0, 0))[0]), best)
        self.picks[pick] += 1
        return pick

    def observe(self, row_tokens: int, rows: int, drafts: int, tokens: int, seconds: float,
                unit: str = "call") -> None:
        """A call (or round) of `rows` rows with `drafts` drafts per row decoded `tokens` answer tokens in
        `seconds`."""
        ctx = self.context(row_tokens, rows, unit)
        table = self.rates.setdefault(ctx, {})
        table[drafts] = (table.get(drafts, []) + [tokens / max(seconds, 1e-12)])[-self.window:]
        held = self.best(ctx)
        if held not in table:
            return
        # another d takes over only when its median beats the incumbent's by `margin` (one lucky call of a
        # neighbour, or a noisy one of the incumbent, does not flip the choice)
        rivals = [d for d in table if d != held and len(table[d]) >= self.min_samples]
        rival = max(rivals, key=lambda d: (_median(table[d]), -d), default=None)
        if rival is not None and _median(table[rival]) > (1 + self.margin) * _median(table[held]):
            self.incumbent[ctx] = rival
        if drafts != held:  # an explored neighbour: try it again soon if it won, later and later if it lost
            wait, calls = self.retry.get((*ctx, drafts), (0, self.explore_every // 2))[1], self.calls.get(ctx, 0)
            if self.best(ctx) == drafts:
                wait = self.explore_every
            elif len(table[drafts]) < self.min_samples and _median(table[drafts]) > _median(table[held]):
                self.retry[(*ctx, drafts)] = (calls, wait)  # promising on too few calls: measured again next
                return
            else:  # doubled, and long enough that retrying costs about `explore_cost` of the time
                loss = 1.0 - _median(table[drafts]) / _median(table[self.best(ctx)])
                wait = min(max(2 * wait, math.ceil(loss / self.explore_cost)), 16 * self.explore_every)
            self.retry[(*ctx, drafts)] = (calls + wait, wait)

    def estimates(self, row_tokens: int, rows: int, unit: str = "call") -> dict[int, float]:
        """{d: median tokens/s} measured in the context of such a call (or round)."""
        ctx = self.context(row_tokens, rows, unit)
        return {d: _median(r) for d, r in sorted(self.rates.get(ctx, {}).items())}


def _power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _median(values: list[float]) -> float:
    """The median (of an even count, the mean of the middle two: the upper one alone made a neighbour measured
    twice, one lucky call and one poor, look as good as its lucky call)."""
    ordered, half = sorted(values), len(values) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2
