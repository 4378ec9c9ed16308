"""sparq-perf: predict and measure the decode speedup of SparQ Attention.

Importing the package imports neither torch nor triton. For scripting:

    import sparq_perf
    rows = sparq_perf.predict_rows(gpu="a100", seq="128k", model="llama2-7b", batch=1)
"""
__version__ = "0.1.0"


def predict_rows(gpu: str = "h100-sxm", seq="4k", model: str = "llama2-7b", batch: int = 1,
                 compression: str = "1/8", r: int | None = None, k=None, l: int = 0,
                 weight_dtype: str = "bf16", kv_dtype: str = "bf16") -> list[dict]:
    """The rows `sparq-perf predict` prints, with the same defaults and the same checks."""
    from .hardware import get_profile
    from .models import get_model
    from .predict import Settings, predict
    from .units import parse_count, parse_fraction

    s = Settings(get_model(model), get_profile(gpu), batch=batch, seq_len=parse_count(seq), r=r, k=k, l=l,
                 compression=parse_fraction(str(compression), "compression"), weight_dtype=weight_dtype,
                 kv_dtype=kv_dtype)
    return predict(s).rows
