"""Which GPU is this: NVML identity, clocks and throttle reasons, and the matching profile."""
from __future__ import annotations

import re


def nvml_snapshot(index: int = 0) -> dict:
    """Name, memory, driver, clocks and throttle reasons of GPU `index` (empty if NVML is absent)."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return {"nvml_error": str(e)}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(h)
        out = {
            "name": name.decode() if isinstance(name, bytes) else name,
            "memory_total_bytes": pynvml.nvmlDeviceGetMemoryInfo(h).total,
            "driver": _s(pynvml.nvmlSystemGetDriverVersion()),
        }
        for key, fn in (("sm_clock_hz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM) * 1e6),
                        ("memory_clock_hz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM) * 1e6),
                        ("max_sm_clock_hz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM) * 1e6),
                        ("temperature_c", lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
                        ("power_w", lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1e3),
                        ("throttle_reasons", lambda: throttle_names(pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)))):
            try:
                out[key] = fn()
            except (pynvml.NVMLError, AttributeError) as e:
                out[key] = f"unavailable: {e}"
        return out
    finally:
        pynvml.nvmlShutdown()


def throttle_names(mask: int) -> list[str]:
    import pynvml

    names = []
    for attr in dir(pynvml):
        m = re.fullmatch(r"nvmlClocksEventReason(\w+)", attr) or re.fullmatch(r"nvmlClocksThrottleReason(\w+)", attr)
        if m and m.group(1) not in ("All", "None", "Unknown") and isinstance(getattr(pynvml, attr), int):
            if mask & getattr(pynvml, attr):
                names.append(m.group(1))
    return sorted(set(names))


def _s(x):
    return x.decode() if isinstance(x, bytes) else x


# NVML name fragments -> profile name; first match wins, so specific before general.
_NAME_TO_PROFILE = [
    (r"H100.*PCIe", "h100-pcie"), (r"H100", "h100-sxm"), (r"H200", "h200"),
    (r"A100.*PCIE.*80|A100.*80.*PCIe", "a100-80gb-pcie"), (r"A100.*80", "a100-80gb-sxm"), (r"A100", "a100-40gb-sxm"),
    (r"L40S", "l40s"), (r"\bL4\b", "l4"), (r"A10G", "a10g"), (r"4090", "rtx4090"), (r"MI300X", "mi300x"),
]


def match_profile(gpu_name: str) -> str | None:
    for pattern, profile in _NAME_TO_PROFILE:
        if re.search(pattern, gpu_name or "", re.IGNORECASE):
            return profile
    return None
