"""`raylab bench freedave` end to end on a small setting: one run directory, every lossless method exact."""
import json

from raylab.bench.freedave import main


def test_bench_writes_a_run_directory_with_every_batch_and_model(tmp_path, capsys):
    assert main(["--model", "tiny,sdar", "--batch", "1,3", "--samples", "6", "--repeats", "1",
                 "--output-dir", str(tmp_path)]) == 0
    run = next(tmp_path.glob("bench-freedave-*"))
    results = json.loads((run / "results.json").read_text())
    settings = json.loads((run / "settings.json").read_text())
    assert set(results) >= {"tiny/batch1", "tiny/batch3", "sdar/batch1", "sdar/batch3"}
    assert "load_avg_1m" in settings["machine"] and "load_avg_1m_end" in results
    for key in ("tiny/batch1", "tiny/batch3", "sdar/batch1", "sdar/batch3"):
        for method in ("static", "static_control", "freedave", "freedave_cost"):
            assert results[key][method]["exact_match"] == 1.0
        calls = 6 // int(key[-1]) + (6 % int(key[-1]) > 0)  # one timed pass over 6 prompts
        assert sum(results[key]["freedave_cost"]["drafts_picked"].values()) == calls
    assert "freedave_dual_cache" in results["tiny/batch1"] and "freedave_dual_cache" not in results["sdar/batch1"]
    assert results["tiny/batch1"]["freedave"]["tokens_per_nfe"] > 2.5
    assert "| tiny MDLM (ReverseTask) | 1 | freedave |" in (run / "results.md").read_text()


def test_serving_bench_replays_one_stream_through_both_schedules(tmp_path):
    assert main(["--serving", "--model", "llada", "--requests", "6", "--rate", "500", "--max-batch", "3",
                 "--output-dir", str(tmp_path)]) == 0
    run = next(tmp_path.glob("bench-freedave-serving-*"))
    results = json.loads((run / "results.json").read_text())
    for method in ("static", "freedave"):
        assert results[f"llada/{method}/same_answers"] is True  # both schedules: every request's own answer
        for rule in ("batches", "continuous"):
            r = results[f"llada/{method}/{rule}"]
            assert r["requests_per_s"] > 0 and 0 < r["latency_p50_s"] <= r["latency_p95_s"]
    assert "| random llada | freedave | continuous |" in (run / "results.md").read_text()
