"""The committed tiny MDLM (assets/tiny_mdlm, trained by `raylab run experiments/mdlm_train.yaml`): it solves its
task (reversing 12 digits), and FreeDave reproduces its static decoding in a fraction of the forwards."""
from pathlib import Path

import pytest
import torch

from raylab.diffusion import generate
from raylab.diffusion.model import TinyMDLM
from raylab.diffusion.tasks import MASK, load_task

CHECKPOINT = Path(__file__).parents[2] / "assets" / "tiny_mdlm"
TASK = load_task(CHECKPOINT)


@pytest.fixture(scope="module")
def model():
    return TinyMDLM.load(CHECKPOINT, dtype=torch.float64)


def test_static_decoding_solves_the_task_above_95_percent(model):
    prompts, answers = TASK.heldout(64, seed=3)
    out = generate(model, prompts, method="static", gen_length=12, mask_token_id=MASK)
    assert (out.sequences[:, TASK.prompt_length:] == answers).all(dim=1).double().mean() >= 0.95


@pytest.mark.parametrize("block_length,k", [(12, 8), (4, 4)])
def test_freedave_matches_static_with_3x_fewer_forwards(model, block_length, k):
    prompts, _ = TASK.heldout(32, seed=4)
    kw = dict(gen_length=12, block_length=block_length, mask_token_id=MASK)
    static = generate(model, prompts, method="static", **kw)
    fd = generate(model, prompts, method="freedave", draft_steps=k, **kw)
    assert torch.equal(fd.sequences, static.sequences)
    assert fd.tokens_per_nfe >= 2.5 * static.tokens_per_nfe


def test_checkpoint_is_small_and_a_missing_one_is_a_one_line_error(tmp_path):
    assert sum(f.stat().st_size for f in CHECKPOINT.iterdir()) < 5e6
    with pytest.raises(FileNotFoundError, match="not a TinyMDLM checkpoint"):
        TinyMDLM.load(tmp_path)


def test_tasks_and_their_errors(tmp_path):
    from raylab.diffusion.tasks import make_task, save_task

    prompt, answer = make_task("reverse", 5).sample(3, torch.Generator().manual_seed(0))
    assert torch.equal(answer, prompt[:, :5].flip(dims=[1])) and (prompt[:, 5] == 10).all()
    _, answer = make_task("sort", 5).sample(3, torch.Generator().manual_seed(0))
    assert (answer.diff(dim=1) >= 0).all()
    save_task(make_task("sort", 7), tmp_path)
    assert load_task(tmp_path) == make_task("sort", 7)
    with pytest.raises(ValueError, match="task: 'copy' is not one of"):
        make_task("copy", 4)
    with pytest.raises(FileNotFoundError, match="no task.json"):
        load_task(tmp_path / "elsewhere")


def test_demo_prints_both_traces(capsys):
    from raylab.diffusion.demo import main

    assert main(["--checkpoint", str(CHECKPOINT)]) == 0
    out = capsys.readouterr().out
    assert "static: 12 forward passes" in out and "FreeDave output equals static output" in out
