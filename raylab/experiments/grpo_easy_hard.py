"""Experiment `grpo_easy_hard`: the seed's easy/hard study of std normalisation on a tiny language model.

    raylab run experiments/grpo_easy_hard.yaml                  # a few minutes on 2 CPU cores
    raylab run experiments/grpo_easy_hard.yaml seeds=5 steps=60

The policy (`assets/tiny_policy_easy_hard`, rebuilt by `python -m raylab.grpo.policy
assets/tiny_policy_easy_hard easy_hard`) starts near pi* = 0.5 on the 55 easy questions (1-digit sums without a
carry) and near 0.2 on the 45 hard ones (with a carry), as the seed's Qwen2.5-Math did on GSM8K. For each subset,
arm (std or no-std advantages; SGD or AdamW; one lr per optimizer, the same for both modes) and seed, one
`raylab.grpo.easy_hard.StudyRun` trains on that subset only and measures its exact accuracy (mean pi*). Runs
advance as Ray tasks, `chunk` steps at a time. A step (`STEP_NAME`) is one GRPO step of every run;
`checkpoint_every` counts steps (chunks end on its multiples). A diagnostic run (arm `diagnostics.arm`, trained
on all 100 questions) records the seed's diagnostics every `diagnostics.every` steps.

metrics.jsonl: per step, for each subset and arm, the mean over seeds of reward and, on evaluation steps, the
accuracy with its standard error over seeds; on diagnostic steps the diagnostic run's per-question pi*, reward
variance and curvature and its gradient-cosine statistics. Figures: easy_hard_accuracy.png (accuracy against
steps, one panel per subset), easy_hard_cosines.png (inverse CDF of |cos| between question gradients),
easy_hard_curvature.png (curvature against reward variance, binned); easy_hard_table.md: final accuracy
± standard error per subset and arm, and the diagnostics table (Pearson correlations at the same and at
different iterations, cosine statistics).
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from raylab.config import RunConfig, Section, check_model_path
from raylab.grpo.easy_hard import Arm, StudySettings
from raylab.plots import plot_lines, plot_panels

STEP_NAME = "step"
SUBSETS = ("easy", "hard")


class DiagnosticsConfig(Section):
    arm: str | None = Field("sgd-std", description="the arm of the diagnostic run; None: no diagnostics")
    every: int = Field(5, ge=1, description="steps between diagnostics")


class Config(RunConfig):
    experiment: Literal["grpo_easy_hard"] = "grpo_easy_hard"
    policy: str = Field("assets/tiny_policy_easy_hard", description="local model directory or hub id")
    arms: list[Arm] = Field(default_factory=lambda: [Arm("sgd-std", "std", "sgd", 0.5),
                                                     Arm("sgd-no-std", "no_std", "sgd", 0.5)], min_length=1)
    subsets: list[Literal["easy", "hard"]] = Field(["easy", "hard"], min_length=1)
    settings: StudySettings = Field(default_factory=StudySettings)
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    steps: int = Field(30, ge=1)
    seeds: int = Field(3, ge=1)
    eval_every: int = Field(2, ge=1)
    chunk: int = Field(10, ge=1, description="steps per Ray task between logs")

    @model_validator(mode="after")
    def _checks(self) -> "Config":
        check_model_path(self.policy, "policy")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names must differ (got {names})")
        if self.diagnostics.arm is not None and self.diagnostics.arm not in names:
            raise ValueError(f"diagnostics.arm: {self.diagnostics.arm!r} is not one of the arms {names}")
        return self


def questions(subset: str | None) -> list[dict]:
    from raylab.data.arithmetic import carry_questions

    return [q for q in carry_questions(1) if subset is None or q["difficulty"] == subset]


def advance(policy: str, arm: Arm, subset: str | None, settings: StudySettings, seed: int, state: dict | None,
            start: int, steps: int, eval_every: int, diagnose_every: int) -> tuple[dict, list[dict]]:
    """A Ray task: one run from `state` through steps start..start+steps-1; returns its new state and rows."""
    from raylab.grpo.easy_hard import StudyRun

    run = StudyRun(policy, arm, questions(subset), settings, seed, state=state)
    rows = run.advance(start, steps, eval_every, diagnose_every)
    return run.state_dict(), rows


def _runs(cfg: Config) -> list[tuple]:
    """(subset, arm name, seed) of every run; the diagnostic run has subset None ("all")."""
    runs = [(s, a.name, seed) for s in cfg.subsets for a in cfg.arms for seed in range(cfg.seeds)]
    if cfg.diagnostics.arm is not None:
        runs.append((None, cfg.diagnostics.arm, 0))
    return runs


def _key(run: tuple) -> str:
    return f"{run[0] or 'all'}/{run[1]}/{run[2]}"


def run(cfg: Config, ctx) -> dict:
    import ray

    arms = {a.name: a for a in cfg.arms}
    runs = _runs(cfg)
    done, state = ctx.resume()
    state = state or {_key(r): None for r in runs}
    task = ray.remote(num_cpus=ctx.actor_cpus(1))(advance)
    with ctx.progress(cfg.steps, desc="grpo_easy_hard", initial=done) as bar:
        while done < cfg.steps:
            steps = min(cfg.chunk, cfg.steps - done)
            if ctx.checkpoint_every:
                steps = min(steps, ctx.checkpoint_every - done % ctx.checkpoint_every)
            futures = {r: task.remote(cfg.policy, arms[r[1]], r[0], cfg.settings, cfg.seed + r[2], state[_key(r)],
                                      done, steps, cfg.eval_every, cfg.diagnostics.every if r[0] is None else 0)
                       for r in runs}
            results = dict(zip(futures, ray.get(list(futures.values()))))
            for i in range(steps):
                ctx.log(_row(cfg, {r: results[r][1][i] for r in runs}), step=done + i + 1)
            state = {_key(r): results[r][0] for r in runs}
            done += steps
            ctx.checkpoint(done, state)
            bar.update(steps)
    ctx.checkpoint(cfg.steps, state, final=True)
    return summarize(cfg, ctx.metrics())


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def _row(cfg: Config, rows: dict[tuple, dict]) -> dict:
    out = {}
    for subset in cfg.subsets:
        for arm in cfg.arms:
            seeds = [rows[(subset, arm.name, s)] for s in range(cfg.seeds)]
            out[f"{subset}/{arm.name}/reward_mean"] = sum(r["reward_mean"] for r in seeds) / len(seeds)
            if "accuracy_start" in seeds[0]:
                out[f"{subset}/{arm.name}/accuracy_start"] = sum(r["accuracy_start"] for r in seeds) / len(seeds)
            if "accuracy" in seeds[0]:
                mean, se = _mean_se([r["accuracy"] for r in seeds])
                out[f"{subset}/{arm.name}/accuracy"] = mean
                out[f"{subset}/{arm.name}/accuracy_se"] = se
    diag = rows.get((None, cfg.diagnostics.arm, 0), {})
    out.update({k: v for k, v in diag.items() if k.startswith("diag_")})
    return out


def correlations(rows: list[dict]) -> dict:
    """Pearson r (and p) of curvature with reward variance: pooled over questions and diagnostic steps at the
    same iteration, and with the variance of one diagnostic step paired with the curvature of every other."""
    from raylab.grpo.diagnostics import pearson

    diag = [r for r in rows if "diag_variance" in r]
    same = ([v for r in diag for v in r["diag_variance"]], [c for r in diag for c in r["diag_curvature"]])
    other_v, other_c = [], []
    for i, a in enumerate(diag):
        for j, b in enumerate(diag):
            if i != j:
                other_v += a["diag_variance"]
                other_c += b["diag_curvature"]
    r_same, p_same = pearson(*same)
    r_other, p_other = pearson(other_v, other_c)
    return {"pearson_same": r_same, "p_same": p_same, "pearson_different": r_other, "p_different": p_other}


def summarize(cfg: Config, rows: list[dict]) -> dict:
    last = rows[-1]
    summary = {}
    for subset in cfg.subsets:
        for arm in cfg.arms:
            key = f"{subset}/{arm.name}/accuracy"
            summary[f"{subset}_{arm.name}_accuracy"] = last.get(key)
            summary[f"{subset}_{arm.name}_accuracy_se"] = last.get(f"{key}_se")
        start = [rows[0][f"{subset}/{a.name}/accuracy_start"] for a in cfg.arms]
        summary[f"{subset}_start_accuracy"] = sum(start) / len(start)  # the same policy: equal in every arm
    diag = [r for r in rows if "diag_cos_mean" in r]
    if diag:
        summary.update(correlations(rows))
        summary["cos_mean"] = sum(r["diag_cos_mean"] for r in diag) / len(diag)
        summary["cos_below_0.15"] = sum(r["diag_cos_below_0.15"] for r in diag) / len(diag)
    return summary


def plot(cfg: Config, ctx) -> None:
    rows = ctx.metrics()
    panels = {}
    for subset in cfg.subsets:
        panels[f"{subset} questions"] = {}
        for arm in cfg.arms:
            key = f"{subset}/{arm.name}/accuracy"
            start = [(0, rows[0][f"{key}_start"])] if rows and f"{key}_start" in rows[0] else []
            points = start + [(r["step"], r[key]) for r in rows if key in r]
            panels[f"{subset} questions"][arm.name] = ([p[0] for p in points], [p[1] for p in points])
    plot_panels(ctx.path("easy_hard_accuracy.png"), panels, xlabel="step",
                suptitle=f"accuracy (mean pi*), mean of {cfg.seeds} seeds")
    diag = [r for r in rows if "diag_cos_quantiles" in r]
    if diag:
        quantiles = [i / 100 for i in range(101)]
        plot_lines(ctx.path("easy_hard_cosines.png"),
                   {f"step {r['step']}": (r["diag_cos_quantiles"], quantiles) for r in diag},
                   xlabel="|cos| between two questions' gradients", ylabel="fraction of pairs below",
                   title="inverse CDF of gradient cosines")
        points = sorted((v, c) for r in diag for v, c in zip(r["diag_variance"], r["diag_curvature"]))
        bins = {}
        for v, c in points:
            bins.setdefault(min(int(v / 0.25 * 10), 9), []).append(c)
        centers = [(b + 0.5) * 0.025 for b in sorted(bins)]
        plot_lines(ctx.path("easy_hard_curvature.png"),
                   {"mean ||Hess J_i u||": (centers, [sum(bins[b]) / len(bins[b]) for b in sorted(bins)]),
                    "max": (centers, [max(bins[b]) for b in sorted(bins)])},
                   xlabel="reward variance pi*(1 - pi*)", ylabel="curvature along the update",
                   title="curvature against reward variance (binned)")
    if rows:
        ctx.path("easy_hard_table.md").write_text(table(cfg, rows))


def table(cfg: Config, rows: list[dict]) -> str:
    summary = summarize(cfg, rows)
    lines = ["| subset | step 0 | " + " | ".join(a.name for a in cfg.arms) + " |",
             "|---|---|" + "---|" * len(cfg.arms)]
    for subset in cfg.subsets:
        cells = [f"{summary[f'{subset}_{a.name}_accuracy']:.3f} ± {summary[f'{subset}_{a.name}_accuracy_se']:.3f}"
                 for a in cfg.arms]
        lines.append(f"| {subset} | {summary[f'{subset}_start_accuracy']:.3f} | " + " | ".join(cells) + " |")
    text = f"Final accuracy (mean pi*) after {rows[-1]['step']} steps, mean ± standard error over {cfg.seeds} seeds\n\n"
    text += "\n".join(lines) + "\n"
    if "pearson_same" in summary:
        text += ("\n| diagnostic | value |\n|---|---|\n"
                 f"| Pearson(curvature, variance), same iteration | {summary['pearson_same']:.3f} "
                 f"(p = {summary['p_same']:.2g}) |\n"
                 f"| Pearson, different iterations | {summary['pearson_different']:.3f} "
                 f"(p = {summary['p_different']:.2g}) |\n"
                 f"| mean abs cos between question gradients | {summary['cos_mean']:.3f} |\n"
                 f"| pairs with abs cos < 0.15 | {summary['cos_below_0.15']:.2f} |\n")
    return text
