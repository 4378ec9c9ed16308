"""Operations outside attention in one decode step: weight reads (shared by the batch),
norms and the LM head; and the dense prefill of the prompt."""
from __future__ import annotations

import numpy as np

from .. import phases as P
from ..models import Model
from .base import PhaseCost

NORM_FLOPS_PER_ELEMENT = 4  # square, sum, rsqrt-scale, weight
LOGIT_BYTES = 4  # fp32 logits


def _matmul(name: str, batch, d_in: int, d_out: int, w_bytes: float, a_bytes: float) -> PhaseCost:
    B = np.asarray(batch, np.float64)
    return PhaseCost(
        name,
        reads={"weights": d_in * d_out * w_bytes + 0.0 * B, "activations": B * d_in * a_bytes},
        writes={"activations": B * d_out * a_bytes},
        flops=2.0 * B * d_in * d_out,
    )


def _norm(name: str, batch, d: int, a_bytes: float) -> PhaseCost:
    B = np.asarray(batch, np.float64)
    return PhaseCost(name, reads={"weights": d * a_bytes + 0.0 * B, "activations": B * d * a_bytes},
                     writes={"activations": B * d * a_bytes}, flops=B * d * NORM_FLOPS_PER_ELEMENT)


def layer_costs(m: Model, batch, w_bytes: float, a_bytes: float = 2.0) -> dict[str, PhaseCost]:
    """Per-layer operations other than attention."""
    mlp = _matmul(P.MLP, batch, m.d_model, (3 if m.gated else 2) * m.d_ff, w_bytes, a_bytes)
    # the MLP's input and output are d_model wide, not its stacked weight width
    mlp = PhaseCost(P.MLP, mlp.reads, {"activations": np.asarray(batch, np.float64) * m.d_model * a_bytes}, mlp.flops)
    return {
        P.ATTN_NORM: _norm(P.ATTN_NORM, batch, m.d_model, a_bytes),
        P.QKV_PROJ: _matmul(P.QKV_PROJ, batch, m.d_model, (m.n_heads + 2 * m.n_kv_heads) * m.d_head, w_bytes, a_bytes),
        P.OUT_PROJ: _matmul(P.OUT_PROJ, batch, m.n_heads * m.d_head, m.d_model, w_bytes, a_bytes),
        P.MLP_NORM: _norm(P.MLP_NORM, batch, m.d_model, a_bytes),
        P.MLP: mlp,
    }


def step_costs(m: Model, batch, w_bytes: float, a_bytes: float = 2.0) -> dict[str, PhaseCost]:
    """Operations run once per decode step: the final norm and the LM head."""
    head = _matmul(P.LM_HEAD, batch, m.d_model, m.vocab, w_bytes, a_bytes)
    head = PhaseCost(P.LM_HEAD, head.reads, {"logits": np.asarray(batch, np.float64) * m.vocab * LOGIT_BYTES}, head.flops)
    return {P.FINAL_NORM: _norm(P.FINAL_NORM, batch, m.d_model, a_bytes), P.LM_HEAD: head}


def prefill_cost(m: Model, batch, prompt_len, w_bytes: float, kv_bytes: float, a_bytes: float = 2.0,
                 transposed_key_copy: bool = False) -> PhaseCost:
    """Dense prefill of the whole prompt (all layers): weights once, KV written, causal attention.

    SparQ builds K^T as well (`transposed_key_copy`): one more write of the keys.
    """
    B, S = np.asarray(batch, np.float64), np.asarray(prompt_len, np.float64)
    kv_row = m.n_kv_heads * m.d_head * kv_bytes
    writes = {"K": m.n_layers * B * S * kv_row, "V": m.n_layers * B * S * kv_row}
    if transposed_key_copy:
        writes["KT"] = m.n_layers * B * S * kv_row
    tokens = B * S
    reads = {"weights": m.n_params * w_bytes + 0.0 * tokens, "tokens": tokens * m.d_model * a_bytes}
    attn_flops = m.n_layers * B * m.n_heads * m.d_head * 2.0 * S * S  # QK^T and PV over the causal half
    return PhaseCost("prefill", reads, writes, flops=2.0 * m.n_params * tokens + attn_flops, launches=m.n_layers * 8)
