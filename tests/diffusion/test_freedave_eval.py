"""The freedave_eval experiment end to end on a local Ray instance (a small held-out set)."""
import json

import pytest

from raylab.config import load_config
from raylab.driver import execute
from raylab.results import read_metrics


@pytest.mark.ray
def test_eval_writes_the_table_and_freedave_matches_static(ray_local, tmp_path):
    cfg = load_config("experiments/freedave_eval.yaml", ["samples=24", "progress=false", "max_batch=8"])
    summary = execute(cfg, tmp_path)
    assert summary["freedave_model_calls_per_token"] == 1 / summary["freedave_tokens_per_nfe"]
    assert summary["freedave_exact_match"] == 1.0 and summary["static_exact_match"] == 1.0
    assert summary["freedave_accuracy"] == summary["static_accuracy"] >= 0.9
    assert summary["freedave_nfe_speedup"] >= 2.5
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0].startswith("| Model | Sampling | Acc (%) | Throughput over time")
    assert [row.split("|")[2].strip() for row in table[2:]] == ["Static", "Parallel", "FreeDave"]
    assert (tmp_path / "nfe_per_sample.png").stat().st_size > 0
    assert json.loads((tmp_path / "summary.json").read_text())["freedave_tokens_per_nfe"] > 2.5
    # the sweep's metric is in every logged row (Ray Tune rejects reports without it)
    assert all("freedave_tokens_per_nfe" in row for row in read_metrics(tmp_path))


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    from raylab.config import ConfigError

    with pytest.raises(ConfigError, match="checkpoint: no such local model directory"):
        load_config("experiments/freedave_eval.yaml", [f"checkpoint={tmp_path / 'none'}"])
    cfg = load_config("experiments/freedave_eval.yaml", [f"checkpoint={tmp_path}", "progress=false"])
    with pytest.raises(FileNotFoundError, match="not a TinyMDLM checkpoint"):
        execute(cfg, tmp_path)
    with pytest.raises(ConfigError, match="dataset: 'gsm8k' does not go with kind 'tiny'"):
        load_config("experiments/freedave_eval.yaml", ["dataset=gsm8k"])


@pytest.mark.ray
@pytest.mark.slow
def test_a_native_checkpoint_on_gsm8k_end_to_end(ray_local, tmp_path):
    """A tiny random SDAR checkpoint with the real Qwen2 vocabulary and chat template, on two GSM8K questions:
    the path the TraDo variants take on a GPU (a random model answers nothing right; FreeDave equals static)."""
    import shutil
    from pathlib import Path

    from raylab.diffusion.native import random_model, save_native, tiny_config

    shared = Path(__file__).resolve().parents[3] / "shared"
    if not (shared / "reference_models" / "sdar").is_dir() or not (shared / "data" / "gsm8k").is_dir():
        pytest.skip("../shared (the SDAR tokenizer files and GSM8K) is absent")
    hf = tiny_config("sdar", vocab_size=151936, mask_token_id=151669, eos_token_id=151643)
    path = save_native(random_model("sdar", seed=0, vocab_size=151936, mask_token_id=151669, eos_token_id=151643),
                       tmp_path / "tiny-sdar", hf)
    sdar = shared / "reference_models" / "sdar"
    for name in ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json"):
        shutil.copy(sdar / name, path / name)
    tok = json.loads((sdar / "tokenizer_config.json").read_text())
    tok.pop("auto_map")  # the stock Qwen2 tokenizer class, not the checkpoint's copy of it
    (path / "tokenizer_config.json").write_text(json.dumps(tok))
    cfg = load_config("experiments/freedave_trado4b.yaml", [
        f"checkpoint={path}", f"data_source={shared / 'data' / 'gsm8k' / 'test.jsonl'}", "samples=2",
        "gen_length=8", "dtype=float32", "device=cpu", "gpus_per_actor=0", "progress=false"])
    summary = execute(cfg, tmp_path / "run")
    assert summary["freedave_exact_match"] == 1.0 and summary["static_accuracy"] == 0.0
    assert summary["static_tokens_per_nfe"] >= 1.0  # one token a forward, or more once a row stops at EOS
    assert (tmp_path / "run" / "table.md").is_file()
