"""Fixtures of the GRPO tests: a random tiny Llama policy with the character tokenizer, saved to a folder."""
import os

import pytest

# Ray starts its workers at nice 15; on a shared machine the rollout and learner actors then crawl behind every
# other process. Read when the session's Ray starts; no effect on an idle machine.
os.environ.setdefault("RAY_worker_niceness", "0")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from raylab.grpo.policy import build_char_tokenizer, build_tiny_model

    path = tmp_path_factory.mktemp("tiny_policy")
    tokenizer = build_char_tokenizer()
    build_tiny_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
