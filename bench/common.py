"""What every benchmark records: the machine (CPU model and its bf16 features, GPU), the dtype
the backbone runs in and why, and the peak FLOP/s its MFU is measured against; and how every
benchmark's entry point reports an error."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import torch

from spp.prompts.backbone import Backbone
from spp.prompts.errors import SppError
from spp.prompts.flops import device_peak
from spp.prompts.hardware import cpu_bf16_flags, cpu_model_name
from spp.prompts.parallel import ShardedScore
from spp.prompts.processes import ProcessShardedScore, start_shards
from spp.prompts.scoring import Scorer


def entry(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``: an error spp reports to users (``--device cuda`` without a GPU,
    a bad option) or a failed ``spp`` subprocess is one line on stderr and exit 2, no traceback."""
    try:
        main()
    except SppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except subprocess.CalledProcessError as exc:
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
        last = said.strip().splitlines()[-1:]
        print(f"error: {' '.join(map(str, exc.cmd))[:200]} exited {exc.returncode}"
              + (f": {last[0]}" if last else ""), file=sys.stderr)
        sys.exit(2)


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model_name(), "cpu_bf16_flags": list(cpu_bf16_flags()),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "load_average_1min": os.getloadavg()[0]}


def backbone_record(backbone) -> dict:
    return {"name": backbone.name, "device": str(backbone.device), "dtype": str(backbone.dtype).removeprefix("torch."),
            "dtype_reason": backbone.dtype_reason}


def peak_for(backbone, earlier: dict | None = None) -> dict:
    """The MFU denominator for this backbone's dtype and device (measured now on a CPU).

    With ``earlier`` (the same measurement from the start of the run), the higher of the two,
    both rates kept under ``measurements``: one measurement, taken while something else held a
    vCPU, came out at half the machine's peak (219 vs 415-437 GFLOP/s on 2 AMD EPYC vCPUs) and
    doubled every MFU of that run (1.04: more than the peak)."""
    return peak_of(backbone.dtype, backbone, earlier)


def peak_of(dtype: torch.dtype, backbone, earlier: dict | None = None) -> dict:
    """:func:`peak_for` in another dtype than the backbone's (its device and GEMM shapes)."""
    cfg = backbone.model.config
    now = device_peak(dtype, str(backbone.device), cfg.d_model, cfg.d_ff)
    if earlier is None:
        return now
    before = earlier.get("measurements", [earlier["measured_gemm"]["flops_per_s"]])
    seen = [*before, now["measured_gemm"]["flops_per_s"]]
    best = now if now["flops_per_s"] >= earlier["flops_per_s"] else earlier
    return dict(best, measurements=seen)


def sync(device) -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class BareScorer:
    """The server's own forwards and schedule without the server: compiled if it compiled, each
    batch in as many shards at once as it scores, on as many CPU threads per shard (its /health)."""

    score: ShardedScore | ProcessShardedScore
    device: torch.device

    @classmethod
    def like(cls, backbone: Backbone, health: dict) -> "BareScorer":
        """An older server's /health has no shards or threads: one shard on torch's threads; a
        server whose shards run in worker processes gets worker processes here too."""
        threads = health.get("threads") if backbone.device.type == "cpu" else None
        scorer = Scorer(backbone, compile=health.get("compiled", False))
        score, _ = start_shards(scorer, health.get("shards") or 1, threads,
                                in_processes=bool(health.get("shard_processes")))
        if isinstance(score, ShardedScore) and not scorer.compiled:
            score.run(scorer.warm_up)  # eager forwards warmed too (allocator, kernels) before any timing
        return cls(score, backbone.device)

    def close(self) -> None:
        self.score.close()
