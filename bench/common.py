"""What every benchmark records: the machine (CPU model and its bf16 features, GPU), the dtype
the backbone runs in and why, and the peak FLOP/s its MFU is measured against."""

from __future__ import annotations

import os
import platform

import torch

from spp.prompts.flops import device_peak
from spp.prompts.hardware import cpu_bf16_flags, cpu_model_name


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model_name(), "cpu_bf16_flags": list(cpu_bf16_flags()),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "load_average_1min": os.getloadavg()[0]}


def backbone_record(backbone) -> dict:
    return {"name": backbone.name, "device": str(backbone.device), "dtype": str(backbone.dtype).removeprefix("torch."),
            "dtype_reason": backbone.dtype_reason}


def peak_for(backbone) -> dict:
    """The MFU denominator for this backbone's dtype and device (measured now on a CPU)."""
    cfg = backbone.model.config
    return device_peak(backbone.dtype, str(backbone.device), cfg.d_model, cfg.d_ff)


def sync(device) -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
