"""Block layouts of semi-autoregressive decoding: which block each position is in, and the block-causal mask.

    position_blocks(prompt_len=5, gen_length=11, block_length=4, layout="absolute")  # [0,0,0,0,1,1,1,1,2,...]
    block_causal_mask(5, 8, 4)                      # (13, 13) bool, True where a query may attend a key
    padded_gen_length(5, 8, 4, "absolute")          # 11: the answer fills the last block of 4

Used by `raylab.diffusion.decoding` and `raylab.diffusion.cache`. Pure torch.
"""
from __future__ import annotations

import torch


def padded_gen_length(prompt_len: int, gen_length: int, block_length: int, layout: str) -> int:
    """The answer length decoded: `gen_length`, or with the absolute layout what fills the last block."""
    if layout == "absolute":
        return -(-(prompt_len + gen_length) // block_length) * block_length - prompt_len
    return gen_length


def position_blocks(prompt_len: int, gen_length: int, block_length: int, layout: str = "answer",
                    device=None) -> torch.Tensor:
    """(T,) block id of every position. "answer": the prompt is block 0 and answer block b is b + 1 (blocks laid
    from the prompt's end); "absolute": block p // block_length, blocks at multiples of the block size from
    position 0, as SDAR/TraDo are trained and run (the prompt's last block is completed by the answer)."""
    pos = torch.arange(prompt_len + gen_length, device=device)
    if layout == "absolute":
        return pos // block_length
    return torch.where(pos < prompt_len, 0, (pos - prompt_len) // block_length + 1)


def block_causal_mask(prompt_len: int, gen_length: int, block_length: int, layout: str = "answer",
                      device=None) -> torch.Tensor:
    """(T, T) bool: a query sees keys of its own and earlier blocks (see `position_blocks`)."""
    blk = position_blocks(prompt_len, gen_length, block_length, layout, device)
    return blk[None, :] <= blk[:, None]
