"""Small deterministic models for the decoding tests (float64, fixed seeds)."""
import torch

from raylab.diffusion.model import TinyMDLM, TinyMDLMConfig

VOCAB, MASK, CONTEXT = 9, 8, 40


def random_transformer(seed: int, d_model: int = 16, n_layers: int = 2) -> TinyMDLM:
    torch.manual_seed(seed)
    cfg = TinyMDLMConfig(vocab_size=VOCAB, mask_token_id=MASK, max_length=CONTEXT, d_model=d_model,
                         n_layers=n_layers, n_heads=2)
    return TinyMDLM(cfg).double().eval()


class IntegerModel:
    """logits[n, i] = sum_j C[i, j, x_j]: small integers computed exactly, so confidences and argmaxes tie often
    (this exercises the shared tie-breaking). Honours a block-causal attention mask."""

    def __init__(self, seed: int, vocab: int = VOCAB, context: int = CONTEXT):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randint(-1, 2, (context, context, vocab, vocab), generator=g).double()
        self.vocab_size, self.max_length = vocab, context

    def __call__(self, input_ids, attention_mask=None):
        T = input_ids.shape[1]
        onehot = torch.nn.functional.one_hot(input_ids, self.vocab_size).double()   # (N, T, V)
        table = self.table[:T, :T]                                                  # (i, j, v, w)
        if attention_mask is None:
            return torch.einsum("njv,ijvw->niw", onehot, table)
        return torch.einsum("njv,nij,ijvw->niw", onehot, attention_mask.double(), table)


class PositionModel:
    """Ignores its input: position i always predicts token (i % 7) with the same confidence."""

    vocab_size = VOCAB

    def __call__(self, input_ids):
        N, T = input_ids.shape
        logits = torch.zeros(N, T, VOCAB, dtype=torch.float64)
        logits[:, torch.arange(T), torch.arange(T) % 7] = 5.0
        return logits


class CountingModel:
    """Answer token 0 predicts 1 (logit 5); token i > 0 predicts its left neighbour + 1 (logit 10) once that is
    known, else 0 (logit 3). Static decoding writes 1, 2, 3, ...; a low threshold fills zeros in parallel."""

    vocab_size = VOCAB

    def __init__(self, prompt_length: int):
        self.P = prompt_length

    def __call__(self, input_ids):
        N, T = input_ids.shape
        logits = torch.zeros(N, T, VOCAB, dtype=torch.float64)
        logits[:, self.P, 1] = 5.0
        for i in range(self.P + 1, T):
            left = input_ids[:, i - 1]
            known = left != MASK
            logits[known, i, (left[known] + 1) % 7] = 10.0
            logits[~known, i, 0] = 3.0
        return logits



TINY_VOCAB, TINY_MASK = 64, 60  # raylab.diffusion.native.tiny_config's defaults


def tiny_checkpoint(directory, arch: str, seed: int = 0, scale: float = 1.0):
    """A random native model of `arch` saved with its official weight names; `scale` sharpens its logits."""
    from raylab.diffusion.native import random_model, save_native, tiny_config

    return save_native(random_model(arch, seed, scale), directory / arch, tiny_config(arch))
