"""Model FLOPs of a T5 forward, and the peak they are measured against (MFU = achieved / peak).

The one formula (multiply-add = 2 FLOPs; matmuls only: layer norms, softmax, GELU, embeddings
and the relative position bias are left out, as is usual for MFU). With d = d_model,
h = num_heads * d_kv, f = d_ff, g = 3 matrices for gated-GELU (T5 v1.1) or 2 for ReLU (v1.0),
V = vocabulary, for one example with T encoder tokens (prompt included, no padding) and D
decoder tokens (no padding), of which S are scored through ``lm_head``:

    encoder, per layer:  T * (8 d h  +  4 T h  +  2 g d f)
    decoder, per layer:  D * (8 d h  +  4 D h)          self-attention
                       + D * (4 d h  +  4 T h)          cross-attention queries/outputs, scores
                       + T * 4 d h                      cross-attention keys/values of the encoder states
                       + D * 2 g d f                    feed-forward
    head:                S * 2 d V

Padding is never counted: a benchmark that pads pays for it in time, and its MFU drops. A
training step of a prompt on the frozen backbone is counted as 2 forwards (the backward needs
the activation gradients, not the weight gradients).

The peak is the dtype's dense GEMM rate: measured in the same run on a CPU
(:func:`measured_gemm_peak`), or the device's datasheet figure on a GPU (:data:`GPU_BF16_PEAK`).
"""

from __future__ import annotations

import time

import torch

# Dense (no sparsity) bf16 tensor-core TFLOP/s from the vendors' datasheets, by a substring of
# torch.cuda.get_device_name(). Longer keys are matched first ("H100 PCIe" before "H100").
GPU_BF16_PEAK = {
    "H200": 989.4e12,
    "H100 PCIe": 756.0e12,
    "H100": 989.4e12,
    "A100": 312.0e12,
    "L40S": 362.0e12,
    "L4": 121.0e12,
    "A10G": 70.0e12,
}


def t5_forward_flops(config, enc_tokens: int, dec_tokens: int, scored_tokens: int | None = None) -> float:
    """FLOPs of one example's forward (see the module docstring for the formula)."""
    d, f, V = config.d_model, config.d_ff, config.vocab_size
    h = config.num_heads * config.d_kv
    g = 3 if "gated" in str(getattr(config, "feed_forward_proj", "relu")) else 2
    T, D = enc_tokens, dec_tokens
    S = dec_tokens if scored_tokens is None else scored_tokens
    encoder = config.num_layers * T * (8 * d * h + 4 * T * h + 2 * g * d * f)
    decoder = config.num_decoder_layers * (
        D * (8 * d * h + 4 * D * h) + D * (4 * d * h + 4 * T * h) + T * 4 * d * h + D * 2 * g * d * f
    )
    return float(encoder + decoder + S * 2 * d * V)


def scoring_flops(config, enc_tokens: int, label_token_ids) -> float:
    """Rank scoring of one example: its candidates packed in one decoder row, every token scored."""
    D = sum(len(t) for t in label_token_ids)
    return t5_forward_flops(config, enc_tokens, D, D)


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, device: str = "cpu", repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` (m×k)·(k×n) matmuls (after a warm-up)."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    best = float("inf")
    for i in range(repeats + 1):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - t0)
    return 2.0 * m * k * n / best


def measured_gemm_peak(dtype: torch.dtype, device: str = "cpu", d_model: int = 512, d_ff: int = 1024) -> dict:
    """The best dense GEMM rate seen for ``dtype`` over a few shapes: the model's feed-forward
    at 2048 tokens, and square 1024/2048 (large enough to be compute-bound on a CPU)."""
    shapes = [(2048, d_model, d_ff), (2048, d_ff, d_model), (1024, 1024, 1024), (2048, 2048, 2048)]
    rates = {f"{m}x{k}x{n}": gemm_rate(m, k, n, dtype, device) for m, k, n in shapes}
    best = max(rates, key=rates.get)
    return {"flops_per_s": rates[best], "shape": best, "by_shape": rates}


def device_peak(dtype: torch.dtype, device: str = "cpu", d_model: int = 512, d_ff: int = 1024) -> dict:
    """The peak MFU is measured against: the datasheet bf16 figure for a known GPU, else the
    in-run measured GEMM peak of ``dtype`` (always measured too, for the record)."""
    measured = measured_gemm_peak(dtype, device, d_model, d_ff)
    out = {"measured_gemm": measured, "flops_per_s": measured["flops_per_s"], "source": f"measured {dtype} GEMM"}
    if device.startswith("cuda") and dtype == torch.bfloat16:
        name = torch.cuda.get_device_name(torch.device(device))
        key = next((k for k in sorted(GPU_BF16_PEAK, key=len, reverse=True) if k in name), None)
        if key is not None:
            out.update(flops_per_s=GPU_BF16_PEAK[key], source=f"datasheet dense bf16 of {key}")
    return out


def mfu(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s as a share of the peak."""
    return flops / seconds / peak_flops_per_s if seconds > 0 and peak_flops_per_s > 0 else 0.0
