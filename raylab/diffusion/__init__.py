"""Masked diffusion language models: decoding (static, parallel, FreeDave), a tiny MDLM and its training, and
adapters for LLaDA, Dream and TraDo/SDAR. Pure torch; the Ray actors live in `raylab.diffusion.actors`."""
from raylab.diffusion.decoding import DecodeResult, generate

__all__ = ["DecodeResult", "generate"]
