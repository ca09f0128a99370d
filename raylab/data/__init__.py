"""Datasets for GRPO: GSM8K and MATH500 loaders (local files or Hugging Face datasets) and synthetic tasks.

Every loader returns a list of examples, dicts with at least "prompt" and "answer" (what the rewards in
`raylab.grpo.rewards` check), plus "solution" and "difficulty" for the math sets.

    from raylab.data.gsm8k import load_gsm8k
    from raylab.data.math500 import load_math500
    from raylab.data.arithmetic import make_arithmetic
"""
