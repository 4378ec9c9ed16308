"""Shared pieces: grid sizing and the log-sum-exp merge of split partial softmaxes."""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from sparq_perf.cost.base import splits

LOG2E = 1.4426950408889634

# The Triton interpreter (CPU) computes tl.dot on bfloat16 operands wrongly (seen with
# triton 3.9); there, dots run on operands upcast to fp32, which rounds nothing away.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# Programmatic dependent launch (sm_90 on): each kernel of a step launches with launch_pdl,
# so its programs become resident while the kernel before it drains. Each program waits
# (grid_wait) for that kernel to complete and flush its memory before any store and before
# loading what that kernel wrote, and only then lets the next kernel launch (the next one
# starts once every program of this one has, or has exited). So when a kernel starts, the
# one before it has passed its own wait: whatever was written two launches back or more is
# complete and may be loaded before the wait. Only the filter does (its tile of scores, at
# L2): the attend's q and statistics are written one launch back where a caller writes q
# between the selection and the attend, so the attend waits first.
# The next kernel launches once every program of this one has let it (launch_next), after its
# main work (PDL_LAUNCH_EARLY False) or right after its wait (True: its waiting programs
# then share the SMs with this kernel's work for longer). USE_PDL: None where the GPU and
# Triton support it; False never (tuning).
USE_PDL = None
PDL_LAUNCH_EARLY = False


@functools.lru_cache(maxsize=None)
def _pdl_supported() -> bool:
    if INTERPRET or not torch.cuda.is_available() or not hasattr(tl.extra.cuda, "gdc_wait"):
        return False
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
        major = torch.cuda.get_device_capability()[0]
    except (ImportError, RuntimeError, AssertionError):
        return False
    return major >= 9 and "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})


def pdl_on() -> bool:
    return USE_PDL is not False and _pdl_supported()


def pdl_args(enabled: bool = True) -> dict:
    """A launch's PDL constexpr (0: off; 1: the next kernel let launch at the wait; 2: at
    launch_next) and, where on (and enabled for this launch), its launch_pdl option."""
    if not (enabled and pdl_on()):
        return {"PDL": 0}
    return {"PDL": 1 if PDL_LAUNCH_EARLY else 2, "launch_pdl": True}


@triton.jit
def grid_wait(PDL: tl.constexpr):
    """In a kernel launched with pdl_args, before its stores and its loads of what the
    kernel before wrote: wait for that kernel (a no-op without PDL)."""
    if PDL != 0:
        tl.extra.cuda.gdc_wait()
    if PDL == 1:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def launch_next(PDL: tl.constexpr):
    """After a program's main work (and its grid_wait): the next kernel may launch once every
    program has been here or exited."""
    if PDL == 2:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def dot(a, b, UPCAST: tl.constexpr):
    """tl.dot with fp32 accumulation; UPCAST runs it on fp32 operands (the interpreter)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    else:
        return tl.dot(a, b)


def device_sms(device_index=0) -> int | None:
    """The GPU's multiprocessor count, or None where torch cannot tell."""
    try:
        return int(torch.cuda.get_device_properties(device_index).multi_processor_count)
    except (RuntimeError, AssertionError, AttributeError, TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=None)
def num_sms(device_index=0) -> int:
    # without a GPU the interpreter runs programs one after another: keep grids small
    return (torch.cuda.is_available() and device_sms(device_index)) or 8


def compiled_variants(fn) -> list[dict]:
    """Each specialisation a Triton JIT function has compiled on this process's GPUs: its
    warps, registers and spilled bytes per thread as the driver loaded it (a kernel's
    registers set how many of its warps an SM holds), and its constexprs. Empty where none
    has compiled; a row {"unavailable": why} where Triton's internals differ from those read
    here or a variant could not be loaded."""
    rows = []
    try:
        for cache in getattr(fn, "device_caches", {}).values():
            kernels = cache[0] if isinstance(cache, tuple) else cache
            for kern in kernels.values():
                kern._init_handles()
                consts = getattr(kern, "src", None) and getattr(kern.src, "constants", None)
                rows.append(dict(warps=getattr(kern.metadata, "num_warps", 0), regs=kern.n_regs,
                                 spilled_bytes=kern.n_spills,
                                 constexprs={str(k): str(v) for k, v in (consts or {}).items()}))
    except Exception as e:  # triton's internals move between versions; a variant may fail to load
        rows.append({"unavailable": repr(e)[:200]})
    return rows


def n_splits_for(n_rows: int, length: int, block: int, waves: float = 2.0, whole: bool = False,
                 max_blocks: float = float("inf")) -> int:
    """Splits of `length` so that n_rows * splits programs fill the GPU about `waves` times
    (whole: at most `waves` times), and more where a split would hold over max_blocks blocks
    (cost.base.splits).

    Depends on the row count and on length only through its blocks, so the grid changes
    rarely as S grows (and the kernels never recompile for S).
    """
    return int(splits(n_rows, length, block, waves, num_sms(), whole, max_blocks))


def chunk_for(length: int, n_splits: int, block: int) -> int:
    """Positions per split, a multiple of the block."""
    return triton.cdiv(triton.cdiv(length, n_splits), block) * block


def pow2_bucket(n: int) -> int:
    return max(1, triton.next_power_of_2(int(n)))


# A split kernel's last program of each KV head can merge the partials itself (no merge
# launch; last_split_merges): every program stores its partials, then takes a ticket from
# the head's counter (acq_rel, after a barrier: the CTA's stores are ordered before it); the
# program that draws the last ticket reads them all from L2 (.cg) and resets the counter for
# the next call.


@triton.jit
def merge_row(O_PART, M_PART, L_PART, A_PART, vbar, out_ptr, base, n_splits,
              D: tl.constexpr, DP: tl.constexpr, SP: tl.constexpr, MIX: tl.constexpr, CM: tl.constexpr):
    """Merge one query head's split partials, at O_PART/M_PART/L_PART/A_PART + base + split:
    o (fp32 [D], unnormalised), m (running max, log2 domain), l (sum); for SparQ also a
    (partial alpha), and y = alpha*y + (1 - alpha)*v_bar (SparQ step 8). Stores y at out_ptr.
    CM: the loads' cache modifier (".cg" where other programs of this launch wrote them)."""
    offs_s = tl.arange(0, SP)
    offs_d = tl.arange(0, DP)
    sm = offs_s < n_splits
    dm = offs_d < D
    m = tl.load(M_PART + base + offs_s, mask=sm, other=-float("inf"), cache_modifier=CM)
    l = tl.load(L_PART + base + offs_s, mask=sm, other=0.0, cache_modifier=CM)
    o = tl.load(O_PART + (base + offs_s)[:, None] * D + offs_d[None, :], mask=sm[:, None] & dm[None, :], other=0.0,
                cache_modifier=CM)
    m_max = tl.max(m, 0)
    w = tl.where(sm & (m > -float("inf")), tl.exp2(m - m_max), 0.0)
    y = tl.sum(w[:, None] * o, 0) / tl.sum(w * l, 0)
    if MIX:
        alpha = tl.sum(tl.load(A_PART + base + offs_s, mask=sm, other=0.0, cache_modifier=CM), 0)
        y = alpha * y + (1.0 - alpha) * vbar
    tl.store(out_ptr + offs_d, y.to(out_ptr.dtype.element_ty), mask=dm)


@triton.jit
def merge_kernel(
    O_PART, M_PART, L_PART, A_PART, VBAR, OUT, n_splits,
    sVb, sVh, sYb, sYh,
    HQ, G,
    D: tl.constexpr, DP: tl.constexpr,
    SP: tl.constexpr,  # splits rounded up to a power of two (bucketed: no per-token recompilation)
    MIX: tl.constexpr,
    PDL: tl.constexpr,
):
    """One program per (sequence, query head): merge_row. Reads n_splits*(D+3)*4 bytes, writes D*e."""
    grid_wait(PDL)
    pid = tl.program_id(0).to(tl.int64)
    b = pid // HQ
    hq = pid % HQ
    offs_d = tl.arange(0, DP)
    vbar = 0.0
    if MIX:
        vbar = tl.load(VBAR + b * sVb + (hq // G) * sVh + offs_d, mask=offs_d < D, other=0.0)
    launch_next(PDL)
    merge_row(O_PART, M_PART, L_PART, A_PART, vbar, OUT + b * sYb + hq * sYh, pid * n_splits, n_splits,
              D, DP, SP, MIX, "")


@triton.jit
def last_split_merges(COUNT, O_PART, M_PART, L_PART, A_PART, VBAR, OUT, b, h, n_splits,
                      sVb, sVh, sYb, sYh, HKV,
                      G: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, SP: tl.constexpr, MIX: tl.constexpr):
    """Called by every split program of KV head (b, h) after storing its partials: the one
    that finishes last merges the group's G query heads."""
    tl.debug_barrier()  # every thread's partials are stored before the ticket is taken
    row = b * HKV + h
    ticket = tl.atomic_add(COUNT + row, 1, sem="acq_rel")
    if ticket == n_splits - 1:
        tl.store(COUNT + row, 0)
        offs_d = tl.arange(0, DP)
        vbar = 0.0
        if MIX:
            vbar = tl.load(VBAR + b * sVb + h * sVh + offs_d, mask=offs_d < D, other=0.0)
        for g in tl.static_range(G):  # unrolled: the heads' loads in flight together
            hq = h * G + g
            merge_row(O_PART, M_PART, L_PART, A_PART, vbar, OUT + b * sYb + hq * sYh, (row * G + g) * n_splits,
                      n_splits, D, DP, SP, MIX, ".cg")


def merge_args(v_bar, out):
    """The strides last_split_merges and merge_kernel take after their pointers."""
    return v_bar.stride(0), v_bar.stride(1), out.stride(0), out.stride(1)


def launch_merge(o_part, m_part, l_part, a_part, v_bar, out, n_splits, mix):
    B, Hq, d = out.shape
    Hkv = v_bar.shape[1]
    merge_kernel[(B * Hq,)](
        o_part, m_part, l_part, a_part if a_part is not None else m_part, v_bar, out, n_splits,
        *merge_args(v_bar, out), Hq, Hq // Hkv, D=d, DP=triton.next_power_of_2(d), SP=pow2_bucket(n_splits), MIX=mix,
        num_warps=4, **pdl_args(),
    )


def check_q(q, cache):
    B, Hkv, d = cache.batch, cache.n_kv_heads, cache.d_head
    if q.dim() != 3 or q.shape[0] != B or q.shape[2] != d or q.shape[1] % Hkv:
        raise ValueError(f"q must be [{B}, g*{Hkv}, {d}], got {tuple(q.shape)}")
    if q.dtype != cache.dtype:
        raise ValueError(f"q must be {cache.dtype} like the cache, got {q.dtype}")
    if q.stride(-1) != 1:
        raise ValueError("q needs a contiguous last dimension")
    if cache.length < 1:
        raise ValueError("the cache is empty")
