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

# Rival KV-sparse methods (sparq_perf.cost.rivals), same vocabulary: score, select, attend.
QUEST_SCORE = "quest_score"  # page upper-bound scores from per-page min/max of K; last page's min/max update
QUEST_SELECT = "quest_select"  # top pages by upper-bound score
QUEST_ATTEND = "quest_attend"  # exact attention over the chosen pages' full K and V rows
DS_SCORE = "ds_score"  # Double Sparsity: approximate scores from the label cache (r calibrated channels)
DS_SELECT = "ds_select"  # top-k positions
DS_ATTEND = "ds_attend"  # gather k rows of K and V, exact attention
LOKI_SCORE = "loki_score"  # rotate q into the PCA basis; scores from the first r dims of the rotated K
LOKI_SELECT = "loki_select"  # top-k positions
LOKI_ATTEND = "loki_attend"  # gather k rows of the rotated K and of V, exact attention
H2O_ATTEND = "h2o_attend"  # exact attention over the k kept positions, accumulating their scores
H2O_EVICT = "h2o_evict"  # pick the kept position with the least accumulated score to overwrite
STREAM_ATTEND = "stream_attend"  # StreamingLLM / LM-Infinite: exact attention over sinks + recent window
FLEXGEN_SCORE = "flexgen_score"  # exact scores over all of K
FLEXGEN_SELECT = "flexgen_select"  # top-k positions
FLEXGEN_ATTEND = "flexgen_attend"  # softmax over the top-k scores, k rows of V

QUEST_PHASES = (QUEST_SCORE, QUEST_SELECT, QUEST_ATTEND)
DS_PHASES = (DS_SCORE, DS_SELECT, DS_ATTEND)
LOKI_PHASES = (LOKI_SCORE, LOKI_SELECT, LOKI_ATTEND)
H2O_PHASES = (H2O_ATTEND, H2O_EVICT)
STREAM_PHASES = (STREAM_ATTEND,)
FLEXGEN_PHASES = (FLEXGEN_SCORE, FLEXGEN_SELECT, FLEXGEN_ATTEND)

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
