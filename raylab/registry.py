"""Where each experiment and benchmark lives. Modules are imported only when used, so the CLI starts fast
and an experiment's heavy dependencies (transformers, vLLM) load only for that experiment.

An experiment module defines `Config` (a subclass of `raylab.config.RunConfig`) and
`run(cfg, ctx) -> dict` (the final metrics; `ctx` is a `raylab.results.RunContext`).
A YAML may also name its own module by dotted path (`experiment: mylab.my_experiment`).
A benchmark module defines `main(argv: list[str]) -> int`.
"""

EXPERIMENTS = {
    "constrained": "raylab.experiments.constrained",
    "alm_rates": "raylab.experiments.alm_rates",
    "federated": "raylab.experiments.federated",
    "mdlm_train": "raylab.experiments.mdlm_train",
    "freedave_eval": "raylab.experiments.freedave_eval",
    "grpo": "raylab.experiments.grpo",
    "grpo_bandit": "raylab.experiments.grpo_bandit",
    "grpo_easy_hard": "raylab.experiments.grpo_easy_hard",
}

BENCHMARKS = {
    "alm": "raylab.bench.alm",
    "federated": "raylab.bench.federated",
    "freedave": "raylab.bench.freedave",
    "grpo": "raylab.bench.grpo",
}
