"""Small deterministic models for the decoding tests (float64, fixed seeds)."""
import torch

from raylab.diffusion.model import TinyMDLM, TinyMDLMConfig

VOCAB, MASK, CONTEXT = 9, 8, 40


def random_transformer(seed: int, d_model: int = 16) -> TinyMDLM:
    torch.manual_seed(seed)
    cfg = TinyMDLMConfig(vocab_size=VOCAB, mask_token_id=MASK, max_length=CONTEXT, d_model=d_model, n_layers=2,
                         n_heads=2)
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


TINY_VOCAB, TINY_MASK = 64, 60
TINY_CONFIGS = {  # config.json of a tiny random checkpoint of each architecture, in the checkpoints' own keys
    "llada": dict(model_type="llada", d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48,
                  vocab_size=TINY_VOCAB, embedding_size=TINY_VOCAB, mask_token_id=TINY_MASK, rope_theta=10000.0,
                  rms_norm_eps=1e-5, max_sequence_length=64, block_type="llama", layer_norm_type="rms",
                  activation_type="silu", include_bias=False, weight_tying=False, eos_token_id=1),
    "dream": dict(model_type="Dream", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=TINY_VOCAB, mask_token_id=TINY_MASK,
                  max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-6, eos_token_id=1,
                  pad_token_id=0),
    "sdar": dict(model_type="sdar", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=TINY_VOCAB,
                 mask_token_id=TINY_MASK, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-6,
                 block_size=4, eos_token_id=1, attention_bias=False, tie_word_embeddings=False),
}


def tiny_checkpoint(directory, arch: str, seed: int = 0, scale: float = 1.0):
    """A random native model of `arch` saved with its official weight names; `scale` sharpens its logits."""
    from raylab.diffusion.native import ArchConfig, DiffusionTransformer, save_native

    torch.manual_seed(seed)
    model = DiffusionTransformer(ArchConfig.from_hf(TINY_CONFIGS[arch]))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale) if p.ndim > 1 else p.normal_(1.0, 0.1)
    return save_native(model, directory / arch, TINY_CONFIGS[arch])
