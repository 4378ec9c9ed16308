"""The one vocabulary of operation names.

A phase name is the kernel, its test, its cost term, its benchmark rows and its plot
label. The whole attention step of a method is `<method>_decode`.
"""

# Attention phases, in the order a decode step runs them.
APPEND = "append"  # write the new k (twice for SparQ: K and K^T) and v; update v_bar
DENSE_ATTENTION = "dense_attention"  # exact attention over all S positions
SPARQ_SCORE = "sparq_score"  # top-r of |q| and approximate scores over r rows of K^T
SPARQ_SELECT = "sparq_select"  # top-k positions of the approximate scores
SPARQ_ATTEND = "sparq_attend"  # gather k rows of K and V, exact attention, v_bar mixing

DENSE_PHASES = (DENSE_ATTENTION,)
SPARQ_PHASES = (SPARQ_SCORE, SPARQ_SELECT, SPARQ_ATTEND)
ATTENTION_PHASES = (APPEND, DENSE_ATTENTION) + SPARQ_PHASES

# Whole attention step (append excluded, as in the benchmark definitions).
DENSE_DECODE = "dense_decode"
SPARQ_DECODE = "sparq_decode"

# Operations outside attention, per layer unless noted.
ATTN_NORM = "attn_norm"
QKV_PROJ = "qkv_proj"
OUT_PROJ = "out_proj"
MLP_NORM = "mlp_norm"
MLP = "mlp"
FINAL_NORM = "final_norm"  # once per step
LM_HEAD = "lm_head"  # once per step
WEIGHT_OPS = (ATTN_NORM, QKV_PROJ, OUT_PROJ, MLP_NORM, MLP)
STEP_OPS = (FINAL_NORM, LM_HEAD)


def decode_name(method: str) -> str:
    """Name of a method's whole attention step, e.g. 'sparq' -> 'sparq_decode'."""
    return f"{method.replace('-', '_')}_decode"
