"""Two `spp serve` side by side, differing only in their flags, measured in turn.

An A/B of one server setting under the same load: both servers start from the same registry
(8 tasks), are up at once, and take turns under 64 closed-loop HTTP clients (8 tasks mixed,
one RTE input per request); odd rounds measure them in the other order, so that drift in the
machine's load affects both alike. Prints each round and writes the rates to --out as JSON.

    python bench/serve_ab.py --tokenizer /work/shared/data/t5-tokenizer --rte-dir /work/shared/data/rte \
        --a=--no-compile --b=--compile --device cuda      # the defaults: eager vs compiled

Flags that start with a dash are given as `--a=--flag` (several: `--a="--flag1 --flag2"`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import entry, machine  # noqa: E402
from serve import load_inputs, make_artifacts, parse_args  # noqa: E402
from serve_http import Server, http_scenario  # noqa: E402

from spp.prompts.backbone import load_backbone  # noqa: E402


def options(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", default="--no-compile", help="`spp serve` flags of server A")
    p.add_argument("--b", default="--compile", help="`spp serve` flags of server B")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per server per round")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds a server may take to start")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve-ab.json")
    ours, rest = p.parse_known_args(argv)
    # the rest are bench/serve.py's options (--backbone, --tokenizer, --rte-dir, --device, --clients...)
    return ours, parse_args([*rest, "--warmup", "2"] if "--warmup" not in rest else rest)


def main(argv: list[str] | None = None) -> dict:
    ab, args = options(argv)
    inputs, source = load_inputs(args.rte_dir, args.seed)
    backbone = load_backbone(args.backbone, tokenizer=args.tokenizer, device="cpu", dtype="float32")
    tmp = Path(tempfile.mkdtemp(prefix="spp-bench-ab-"))
    from spp.registry import Registry

    registry = Registry(tmp / "registry")
    for i, art in enumerate(make_artifacts(backbone, args.tasks, args.n_tokens, args.seed)):
        registry.publish(art, name=f"task{i}")
    t0 = time.perf_counter()
    servers = {k: Server(args, tmp / "registry", tmp / f"{k}.log", args.dtype, flags.split())
               for k, flags in (("a", ab.a), ("b", ab.b))}
    results: dict = {"machine": machine(), "inputs": source, "flags": {"a": ab.a, "b": ab.b},
                     "device": args.device, "clients": args.clients, "rates": {"a": [], "b": []}}
    try:
        for key, server in servers.items():
            server.wait_ready(timeout=ab.ready_timeout)
            results[f"ready_s_{key}"] = round(time.perf_counter() - t0, 1)  # both started at t0
            results[f"health_{key}"] = server.health()
            print(f"{key} ({getattr(ab, key)}) ready after {results[f'ready_s_{key}']} s", flush=True)
        names = [f"task{i}" for i in range(args.tasks)]
        for r in range(ab.rounds):
            for key in ("a", "b") if r % 2 == 0 else ("b", "a"):
                out = http_scenario(servers[key], args, names, inputs, ab.seconds, args.seed + r)
                results["rates"][key].append(round(out["rate"], 2))
                print(f"round {r + 1}: {key} {out['rate']:.1f} requests/s", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    a, b = (statistics.mean(results["rates"][k]) for k in ("a", "b"))
    results["mean"], results["b/a"] = {"a": a, "b": b}, b / a
    print(f"a {a:.1f}, b {b:.1f} requests/s: b/a = {b / a:.3f}")
    ab.out.parent.mkdir(parents=True, exist_ok=True)
    ab.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    entry(main)
