"""Masked diffusion language models: decoding (static, parallel, FreeDave), native LLaDA / Dream / SDAR models
loaded from their checkpoints, a tiny MDLM and its training. Pure torch; the Ray actors live in
`raylab.diffusion.actors`."""
from raylab.diffusion.adapters import DiffusionLM, load_diffusion_lm
from raylab.diffusion.decoding import DecodeResult, generate

__all__ = ["DecodeResult", "DiffusionLM", "generate", "load_diffusion_lm"]
