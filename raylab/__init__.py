"""raylab: distributed training experiments on Ray.

Pure cores (no Ray): `raylab.constrained` (SSL-ALM, STORM-ALM and baselines), the math of `raylab.grpo`
and `raylab.diffusion` (FreeDave decoding). Ray actors, the driver, Tune and the CLI wrap them.
"""
__version__ = "0.1.0"
