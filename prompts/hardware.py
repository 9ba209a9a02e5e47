"""Which dtype a frozen T5 runs in, chosen from the hardware and confirmed by measurement.

``--dtype auto`` means: bfloat16 on a CUDA GPU; on a CPU, bfloat16 only where the CPU has
native bf16 matrix units (AMX-BF16 or AVX512-BF16, read from /proc/cpuinfo or torch's CPU
capability) AND a one-off GEMM of the model's own shape runs faster in bf16 than in float32 by
:data:`MIN_SPEEDUP`; float32 elsewhere. Without native support torch emulates bf16 matmul by
converting to float32, which is slower than float32 itself, and for a tiny model the GEMMs are
too small for the bf16 kernels to pay off: the measurement catches both. The choice and its
reason are logged and kept (the server shows them in /health).

``$SPP_CPU_DTYPE`` (``float32`` / ``fp32`` or ``bfloat16`` / ``bf16``) pins what ``auto`` picks on
a CPU, without measuring: for replicas or sweep trials on mixed hosts that must all compute
alike, and for test suites (a tiny model's GEMMs are too small for the measurement to be stable).

Training uses the same choice through :func:`autocast`: the frozen backbone's matmuls run in
bf16 while the prompt parameters, their gradients and the optimizer state stay float32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from spp.prompts.errors import ConfigError
from spp.prompts.flops import gemm_rate

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.3  # bf16 must beat float32 by this factor on the model's GEMM to be chosen
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPU_DTYPE_ENV = "SPP_CPU_DTYPE"  # a name of DTYPES: auto's choice on a CPU, not measured
# the dtype names spp takes, for --dtype (spp.prompts.backbone.resolve_dtype) and $SPP_CPU_DTYPE
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a backbone runs in, and why (one line, for logs and /health)."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def cpu_bf16_flags(cpuinfo: str | None = None, capability: str | None = None) -> tuple[str, ...]:
    """Native bf16 matmul features of a CPU (empty when it has none, or when not on Linux).

    ``cpuinfo``: the text of /proc/cpuinfo; ``capability``: torch's CPU capability ("AVX512",
    "AMX", ...); both read from this machine when None.
    """
    if cpuinfo is None:
        info = Path("/proc/cpuinfo")
        cpuinfo = info.read_text(errors="replace") if info.is_file() else ""
    if capability is None:
        capability = torch.backends.cpu.get_cpu_capability()
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            found.update(f for f in BF16_FLAGS if f in line.split(":", 1)[-1].split())
            break
    if "AMX" in capability.upper():
        found.add("amx_bf16")
    return tuple(f for f in BF16_FLAGS if f in found)


def cpu_model_name() -> str:
    """The CPU's model name (lscpu's "Model name"), for benchmark results."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def bf16_speedup(m: int, k: int, n: int, rounds: int = 3) -> float:
    """float32 time / bf16 time of an (m×k)·(k×n) GEMM, measured interleaved (load hits both)."""
    ratios = []
    for _ in range(rounds):
        f32 = gemm_rate(m, k, n, torch.float32)
        bf16 = gemm_rate(m, k, n, torch.bfloat16)
        ratios.append(bf16 / f32)
    return sorted(ratios)[len(ratios) // 2]


@functools.lru_cache(maxsize=None)
def choose_cpu_dtype(d_model: int = 512, d_ff: int = 1024, tokens: int = 256,
                     flags: tuple[str, ...] | None = None) -> DtypeChoice:
    """bf16 when the CPU has native bf16 matmul (``flags``, None: this CPU's) and it measures
    faster on a (tokens×d_model)·(d_model×d_ff) GEMM, the shape of the model's feed-forward."""
    flags = cpu_bf16_flags() if flags is None else flags
    if not flags:
        return DtypeChoice(torch.float32, "cpu has no native bf16 matmul (no amx_bf16/avx512_bf16)")
    speedup = bf16_speedup(tokens, d_model, d_ff)
    shape = f"{tokens}x{d_model}x{d_ff}"
    if speedup >= MIN_SPEEDUP:
        return DtypeChoice(torch.bfloat16, f"cpu has {'+'.join(flags)}; bf16 GEMM {shape} {speedup:.1f}x float32")
    return DtypeChoice(torch.float32, f"cpu has {'+'.join(flags)} but bf16 GEMM {shape} is only {speedup:.1f}x "
                                      f"float32 (< {MIN_SPEEDUP}x)")


def choose_dtype(device: torch.device, d_model: int = 512, d_ff: int = 1024) -> DtypeChoice:
    """The ``auto`` dtype for a model of this width on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        return DtypeChoice(torch.bfloat16, f"cuda device {torch.cuda.get_device_name(device)}")
    if device.type != "cpu":
        return DtypeChoice(torch.float32, f"{device.type} device: float32")
    pinned = os.environ.get(CPU_DTYPE_ENV, "").strip()
    if pinned:
        if pinned not in DTYPES:
            raise ConfigError(f"${CPU_DTYPE_ENV} must be one of {', '.join(DTYPES)}; got {pinned!r}")
        choice = DtypeChoice(DTYPES[pinned], f"${CPU_DTYPE_ENV}={pinned}")
    else:
        choice = choose_cpu_dtype(d_model, d_ff)
    log.info("dtype auto -> %s: %s", choice.name, choice.reason)
    return choice


CUDNN_ATTENTION_ENV = "SPP_CUDNN_ATTENTION"  # "1": leave cuDNN's attention kernels on (see gpu_attention)


def gpu_attention(device: torch.device) -> str | None:
    """On a CUDA device, turn cuDNN's fused attention off for this process (SDPA then takes the
    memory-efficient kernel, which takes T5's position bias, or flash/math); returns why, for
    the log, or None when nothing changed. ``$SPP_CUDNN_ATTENTION=1`` leaves it on.

    Why: torch keeps cuDNN's attention plans per thread and per exact shape, and builds a new one
    on every miss (tens of ms each, by upstream reports). spp's batches vary in rows and tokens,
    and its shard threads come and go. On an H200 (bf16, t5-small-lm-adapt) a bare batch of
    random RTE rows took ~80 ms in the server benchmark whatever its size (8 or 64 rows), against
    26 ms for one 64-row batch repeated (bench/stages.py); `compute_transfer`, whose shard thread
    is new on each call, took ~1.5 s more per call than single-prompt scoring on a long-lived
    thread. Both fit a plan built per new shape. cuDNN's host cost per call is also the higher
    one when its plan is cached (upstream), and t5-small is host-bound on a GPU. The change
    itself is not yet measured on a GPU: bench/device.sh is the check."""
    if device.type != "cuda" or os.environ.get(CUDNN_ATTENTION_ENV, "").strip() == "1":
        return None
    if not torch.backends.cuda.cudnn_sdp_enabled():
        return None
    torch.backends.cuda.enable_cudnn_sdp(False)
    return (f"cuDNN attention off for this process (its plans are built per thread and per batch shape; "
            f"${CUDNN_ATTENTION_ENV}=1 keeps it)")


def autocast(device: torch.device, dtype: torch.dtype):
    """Context for a training forward: bf16 matmuls when the backbone runs in bf16, else none.

    Parameters created outside (the prompt, float32) keep their dtype; autocast casts them at
    each matmul and their gradients come back in float32, so the optimizer never sees bf16.
    """
    if dtype != torch.bfloat16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
