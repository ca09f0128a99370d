"""Experiment `mdlm_train`: train the tiny masked diffusion LM on a synthetic digit task (sort or reverse).

    raylab run experiments/mdlm_train.yaml                                  # 10 minutes on a busy 2-core machine
    raylab run experiments/mdlm_train.yaml export_dir=assets/tiny_mdlm      # how the committed checkpoint was made
    raylab run experiments/mdlm_train.yaml --resume runs/mdlm_train-...     # continue after an interruption

Logs the MDLM loss and, every `eval_every` steps, the exact-match accuracy of static decoding on a held-out
set. The export holds the model
(config.json, model.safetensors) and the task it learned (task.json).
A step is one optimisation step on one batch (`checkpoint_every` counts steps; metrics rows carry the number of
completed steps). Checkpoints hold the model, the optimizer and the data generator's state, so a resumed run
equals an uninterrupted one. The trained model is saved to `export_dir` (default: `model/` in the run directory).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from raylab.config import RunConfig, Section
from raylab.diffusion import generate
from raylab.diffusion.model import TinyMDLM, TinyMDLMConfig
from raylab.diffusion.tasks import MASK, VOCAB_SIZE, DigitTask, make_task, save_task
from raylab.diffusion.train import accuracy, learning_rate, mdlm_loss
from raylab.plots import plot_lines
from raylab.results import Diverged

STEP_NAME = "step"  # one optimisation step on one batch; checkpoint_every counts these


class ModelConfig(Section):
    d_model: int = Field(64, ge=8)
    n_layers: int = Field(3, ge=1)
    n_heads: int = Field(4, ge=1)


class Config(RunConfig):
    experiment: Literal["mdlm_train"] = "mdlm_train"
    task: Literal["sort", "reverse"] = "reverse"
    n_digits: int = Field(12, ge=2, description="length of the digit strings")
    model: ModelConfig = ModelConfig()
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(100, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    log_every: int = Field(50, ge=1)
    eval_every: int = Field(250, ge=1)
    eval_samples: int = Field(128, ge=1)
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
    export_dir: str | None = Field(None, description="where to save the trained model (default: RUN_DIR/model)")


def evaluate(model: TinyMDLM, task: DigitTask, samples: int, seed: int) -> float:
    prompt, answer = task.heldout(samples, seed)
    out = generate(model, prompt, method="static", gen_length=task.n_digits, mask_token_id=MASK)
    return accuracy(out.sequences[:, task.prompt_length:], answer)


def run(cfg: Config, ctx) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task = make_task(cfg.task, cfg.n_digits)
    model = TinyMDLM(TinyMDLMConfig(vocab_size=VOCAB_SIZE, mask_token_id=MASK, max_length=task.seq_length,
                                    **cfg.model.model_dump()))
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    data = torch.Generator().manual_seed(cfg.seed)
    start, saved = ctx.resume()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optim.load_state_dict(saved["optim"])
        data.set_state(saved["data"])

    def state() -> dict:
        return {"model": model.state_dict(), "optim": optim.state_dict(), "data": data.get_state()}

    acc = None
    with ctx.progress(cfg.steps, desc="mdlm_train", initial=start) as bar:
        for step in range(start, cfg.steps):
            model.train()
            for group in optim.param_groups:
                group["lr"] = learning_rate(step, cfg.steps, cfg.lr, cfg.warmup)
            prompt, answer = task.sample(cfg.batch_size, data)
            loss = mdlm_loss(model, prompt, answer, MASK, data)
            if not torch.isfinite(loss):
                raise Diverged(step + 1, "MDLM loss", loss.item(), STEP_NAME)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            row = {"loss": loss.item()} if step % cfg.log_every == 0 or step == cfg.steps - 1 else {}
            if (step + 1) % cfg.eval_every == 0 or step == cfg.steps - 1:
                model.eval()
                row["static_accuracy"] = acc = evaluate(model, task, cfg.eval_samples, cfg.seed)
            if row:
                ctx.log(row, step=step + 1)
            ctx.checkpoint(step + 1, state())
            bar.update()
    ctx.checkpoint(cfg.steps, state(), final=True)
    model.eval()
    if acc is None:  # resumed after the last step had run
        acc = evaluate(model, task, cfg.eval_samples, cfg.seed)
    export = model.save(Path(cfg.export_dir) if cfg.export_dir else ctx.path("model"))
    save_task(task, export)
    losses = [r["loss"] for r in ctx.metrics() if r.get("loss") is not None]
    return {"final_loss": losses[-1], "static_accuracy": acc, "parameters": sum(p.numel() for p in
            model.parameters()), "export_dir": str(export)}


def plot(cfg: Config, ctx) -> None:
    """loss.png and accuracy.png from the logged rows (also after a divergence)."""
    rows = ctx.metrics()
    losses = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    accs = [(r["step"], r["static_accuracy"]) for r in rows if r.get("static_accuracy") is not None]
    if losses:
        plot_lines(ctx.path("loss.png"), {"MDLM loss": tuple(zip(*losses))}, xlabel="step", ylabel="loss",
                   logy=True)
    if accs:
        plot_lines(ctx.path("accuracy.png"), {"static decoding": tuple(zip(*accs))}, xlabel="step",
                   ylabel="held-out exact match")
