"""Cost-aware draft counts for FreeDave: how many drafts per row maximise accepted tokens per second. Pure torch.

    policy = CostAwareDrafts(max_drafts=8)                 # keep one per model and serve many calls with it
    out = generate(model, prompts, method="freedave", draft_steps=8, draft_policy=policy, ...)

A FreeDave round that drafts d states per row feeds about R*d rows to the model (R rows decoding) and advances
each row by its accepted count; static decoding feeds R rows and advances each by one. Where a call's time grows
with its rows (a CPU, a big batch), more drafts can cost more than the forwards they save. Before each round
the policy compares, for d = 1..k,

    expected accepted tokens of the round / expected seconds of a call feeding that many rows

and picks the best d; d = 1 is static decoding, and `generate` then finishes the call with the static code path
itself (no draft bookkeeping). A d > 1 must beat static's rate by `margin` (25%: timings on a shared machine are noisy).

- Acceptance: draft j+1 is accepted when it equals the static successor of draft j. The policy counts, for each j,
  how often that held among rows that reached draft j, and estimates q_j with a prior that shrinks each q_j
  towards q_{j-1} (q_1 towards `prior`), so depths never tried inherit the rate of the one before (geometric
  extrapolation). A row's expected accepted count with d drafts is 1 + q_1 + q_1 q_2 + ... (d terms).
- Seconds per call: either `call_seconds(rows)` given (a fixed, e.g. calibrated, cost model), or measured online:
  every model call (the first forward of each call, one row per sequence as static makes, and each FreeDave
  verification) is timed; per row length and number of rows fed the median of the last `window` timings is
  kept (a call preempted on a shared machine moves it little), and a line seconds = a + b * rows is fitted
  through those medians by least squares, weighted by how many timings each holds. The
  bookkeeping around a call is kept apart, as the medians of the last `window` measurements of a static step's
  (one ranking) and of a FreeDave round's (ranking, drafts, verification): a round costs call(rows fed) + round
  bookkeeping, a static step call(rows) + static bookkeeping, or, once the policy has handed rows to static
  decoding, those static steps' own wall time (timed whole: everything a step does). With fewer than two
  measured row counts the policy explores: one round with two drafts; and every `explore_every`-th time it
  would pick static it explores again, with the best d > 1 by its estimates (the timings of drafting rounds
  would otherwise never be refreshed once it stops drafting, and a load that changed since they were taken
  would keep it static).

What it learns stays in the object, so a long-lived policy (one per served model) pays the exploration once.
The output never depends on it (any number of drafts verifies to static's output); only NFE and speed do.
"""
from __future__ import annotations

from typing import Callable

import torch


class CostAwareDrafts:
    def __init__(self, max_drafts: int = 8, *, prior: float = 0.5, prior_weight: float = 2.0,
                 margin: float = 0.25, window: int = 15, explore_every: int = 8,
                 call_seconds: Callable[[int], float] | None = None):
        if max_drafts < 1:
            raise ValueError(f"max_drafts: must be >= 1, got {max_drafts}")
        if not 0.0 <= prior <= 1.0:
            raise ValueError(f"prior: must be in [0, 1], got {prior}")
        if window < 1:
            raise ValueError(f"window: must be >= 1, got {window}")
        self.k, self.prior, self.weight, self.margin, self.window = max_drafts, prior, prior_weight, margin, window
        self.explore_every, self.static_picks = explore_every, 0
        self.call_seconds = call_seconds
        self.successes = [0.0] * max_drafts  # index j: draft j+1 accepted after draft j (j = 1 .. k-1)
        self.trials = [0.0] * max_drafts
        self.times: dict[int, dict[int, list[float]]] = {}  # row length -> {rows fed: the last timings}
        self.fits: dict[int, tuple[float, float] | None] = {}  # row length -> (a, b), refitted after a timing
        self.overhead: dict[str, list[float]] = {"static": [], "round": []}  # the last bookkeeping seconds
        self.static_steps: dict[tuple[int, int], list[float]] = {}  # (row length, rows) -> last step seconds

    # --- what it learns -------------------------------------------------------------------------------------
    def observe_call(self, row_tokens: int, rows: int, seconds: float) -> None:
        """A model call that fed `rows` rows of `row_tokens` tokens took `seconds`."""
        if self.call_seconds is not None or rows < 1:
            return
        table = self.times.setdefault(row_tokens, {})
        table[rows] = (table.get(rows, []) + [seconds])[-self.window:]
        self.fits.pop(row_tokens, None)

    def _fit(self, row_tokens: int) -> tuple[float, float] | None:
        if row_tokens not in self.fits:
            table, fit = self.times.get(row_tokens, {}), None
            if len(table) >= 2:
                points = [(n, _median(ts), len(ts)) for n, ts in table.items()]
                w = sum(c for _, _, c in points)
                mean_n = sum(n * c for n, _, c in points) / w
                mean_t = sum(t * c for _, t, c in points) / w
                var = sum(c * (n - mean_n) ** 2 for n, _, c in points)
                slope = max(0.0, sum(c * (n - mean_n) * (t - mean_t) for n, t, c in points) / var)
                fit = (mean_t - slope * mean_n, slope)
            self.fits[row_tokens] = fit
        return self.fits[row_tokens]

    def observe_overhead(self, kind: str, seconds: float) -> None:
        """Bookkeeping seconds around a call: kind "static" (a step's ranking) or "round" (a FreeDave round's)."""
        self.overhead[kind] = (self.overhead[kind] + [seconds])[-self.window:]

    def observe_static(self, row_tokens: int, rows: int, seconds: float) -> None:
        """Static steps over `rows` rows took `seconds` each, as timed whole (call, ranking, everything)."""
        key = (row_tokens, rows)
        self.static_steps[key] = (self.static_steps.get(key, []) + [seconds])[-self.window:]

    def bookkeeping(self, kind: str) -> float:
        """The median of the last measured bookkeeping seconds of `kind` (0 before any)."""
        return _median(self.overhead[kind]) if self.overhead[kind] else 0.0

    def observe_round(self, n_drafts: torch.Tensor, accepted: torch.Tensor) -> None:
        """Rows drafted `n_drafts` states and accepted `accepted` of them (>= 1 each)."""
        n, a = n_drafts.tolist(), accepted.tolist()
        for nd, ac in zip(n, a):
            for j in range(1, min(ac, nd - 1) + 1):  # draft j was accepted and had a successor to check
                self.trials[j] += 1
                self.successes[j] += j < ac

    def acceptance(self) -> list[float]:
        """q_j for j = 1 .. k-1 (index j; index 0 unused and 1.0)."""
        q, previous = [1.0] * self.k, self.prior
        for j in range(1, self.k):
            q[j] = (self.successes[j] + self.weight * previous) / (self.trials[j] + self.weight)
            previous = q[j]
        return q

    def seconds(self, row_tokens: int, rows: int) -> float | None:
        """Expected seconds of a call feeding `rows` rows (None until calls of two sizes are measured)."""
        if self.call_seconds is not None:
            return float(self.call_seconds(rows))
        fit = self._fit(row_tokens)
        return None if fit is None else max(fit[0] + fit[1] * rows, 1e-9)

    # --- the choice -----------------------------------------------------------------------------------------
    def choose(self, row_tokens: int, available: torch.Tensor) -> int:
        """Drafts per row for the next round (1 = static), given each row's number of draftable tokens."""
        R, top = len(available), min(self.k, int(available.max()))
        if top <= 1:
            return 1
        static_s = self.seconds(row_tokens, R)
        if static_s is None:
            return 2  # explore: a second call size to measure
        static_s += self.bookkeeping("static")
        if (row_tokens, R) in self.static_steps:  # timed whole, where static steps were run
            static_s = _median(self.static_steps[(row_tokens, R)])
        q = self.acceptance()
        expected = [1.0]  # expected accepted tokens of a row with i+1 drafts
        run = 1.0
        for j in range(1, top):
            run *= q[j]
            expected.append(expected[-1] + run)
        m = available.clamp(min=1, max=top).tolist()
        round_s = self.bookkeeping("round")
        rates = {}
        for d in range(2, top + 1):
            fed = sum(min(d, x) for x in m)
            rates[d] = sum(expected[min(d, x) - 1] for x in m) / (self.seconds(row_tokens, fed) + round_s)
        drafting = max(rates, key=lambda d: (rates[d], -d))  # the best d > 1 (the smallest of equals)
        if rates[drafting] > R / static_s * (1 + self.margin):
            return drafting
        if self.call_seconds is None:
            self.static_picks += 1
            if self.static_picks % self.explore_every == 0:
                return drafting  # re-measure the round that would be picked if the estimates were off
        return 1


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
