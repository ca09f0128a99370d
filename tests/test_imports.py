"""Pure cores never import Ray or vLLM: they are imported one by one in a fresh interpreter, checking
sys.modules after each, so the first module that pulls Ray in is named."""
import subprocess
import sys

PURE = ["raylab.config", "raylab.results", "raylab.plots", "raylab.cli", "raylab.constrained", "raylab.diffusion",
        "raylab.grpo", "raylab.grpo.advantages", "raylab.grpo.loss", "raylab.grpo.bandit", "raylab.grpo.rewards",
        "raylab.grpo.policy", "raylab.grpo.learner", "raylab.grpo.rollout", "raylab.grpo.rollout.hf",
        "raylab.grpo.rollout.torch_decoder", "raylab.grpo.rollout.vllm", "raylab.data", "raylab.data.arithmetic",
        "raylab.federated"]

CHECK = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    bad = [m for m in ('ray', 'vllm') if m in sys.modules]
    if bad:
        sys.exit(f'{name} imports {bad}')
"""


def test_pure_modules_do_not_import_ray_or_vllm():
    proc = subprocess.run([sys.executable, "-c", CHECK, *PURE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-800:]
