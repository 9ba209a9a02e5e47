"""Registry benchmark: resolve + load latency with 10,000 versions, and `spp list --json` wall time;
on a shared registry also 8 concurrent publishers and the time an alias move takes to reach
two replicas.

    python bench/registry.py                       # 10,000 versions across 100 names, 10 x 768 prompts
    python bench/registry.py --versions 1000 --keep /tmp/reg   # smaller, keep the registry
    PGPASSWORD=... python bench/registry.py --registry 'postgresql://spp@127.0.0.1:5432/bench?store=file:///tmp/blobs'

With a shared registry (``--registry postgresql://...``) the resolve + load loop runs with a
warm local blob cache (what a server replica has), publishers are 8 processes publishing to
one name at once, and alias propagation is measured with two "replica" processes that resolve
``bench@prod`` in a loop exactly as ``spp serve`` does per request: the time from the alias
commit until both have seen the new version.

The registry is filled through the public ``Registry.publish`` API (blob fsync + one SQLite
transaction per version, as real publishes do), so the build time is itself a publish
throughput figure. Each name also gets a ``prod`` alias. Latencies are measured in-process on
a warm handle, over a random mix of ``name``, ``name@k`` and ``name@prod`` references.
Results: a table on stdout and ``bench/results/registry.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from spp.prompts.artifact import Artifact, ArtifactMeta, artifact_bytes
from spp.prompts.backbone import resolve_device
from spp.registry import Registry
from common import entry, machine  # bench/common.py (this script's folder is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "registry.json"


def artifact(task: str, i: int, n_tokens: int, d_model: int, gen: torch.Generator) -> bytes:
    meta = ArtifactMeta(
        task=task, method=("superpos", "ept", "simple", "residual")[i % 4], backbone="google/t5-base-lm-adapt",
        fingerprint="sha256:" + "0" * 64, d_model=d_model, n_tokens=n_tokens,
        metrics={"validation": {"accuracy": round(random.Random(i).random(), 4)}},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return artifact_bytes(Artifact(prompt=torch.randn(n_tokens, d_model, generator=gen), meta=meta))  # (n, e)


def build(reg: Registry, versions: int, names: int, n_tokens: int, d_model: int, seed: int) -> dict[str, float]:
    """Publish ``versions`` distinct artifacts round-robin over ``names`` names."""
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for i in range(versions):
        data = artifact(f"task{i % names:03d}", i, n_tokens, d_model, gen)
        aliases = ["prod"] if i // names == (versions // names) // 2 else []  # prod: a mid-history version
        reg.publish(data, aliases=aliases, tags={"batch": str(i // names)})
        if (i + 1) % 1000 == 0:
            print(f"  published {i + 1}/{versions} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    return {"build_s": total, "publish_ms_mean": 1000 * total / versions}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * pick(0.95), "p99_ms": 1000 * pick(0.99),
            "mean_ms": 1000 * statistics.fmean(ordered)}


def latency(root: str, names: int, per_name: int, iterations: int, seed: int, device: str) -> dict[str, dict[str, float]]:
    reg = Registry(root)
    rng = random.Random(seed)
    refs = []
    for _ in range(iterations):
        name = f"task{rng.randrange(names):03d}"
        kind = rng.randrange(3)
        refs.append(name if kind == 0 else f"{name}@prod" if kind == 1 else f"{name}@{rng.randint(1, per_name)}")
    for ref in set(refs):  # warm the connection, the page cache and (shared registry) the blob cache
        reg.load(ref)
    resolve_t, load_t = [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for ref in refs:
        t0 = time.perf_counter()
        reg.resolve(ref)
        t1 = time.perf_counter()
        version, artifact = reg.load(ref)  # resolve + read + sha256 check + parse
        prompt = artifact.prompt.to(device)  # where a server keeps it
        t2 = time.perf_counter()
        resolve_t.append(t1 - t0)
        load_t.append(t2 - t1)
        assert prompt.shape == (version.n_tokens, version.d_model)
    # Share of the wall time this process was on a CPU: well below 1 means other processes took
    # the cores, and the tail (p99) then shows scheduler time slices, not registry work.
    cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return {"resolve": percentiles(resolve_t), "resolve_load": percentiles(load_t), "cpu_share": cpu_share}


def cli_wall(args: list[str], repeats: int) -> float:
    exe = Path(sys.executable).with_name("spp")  # this interpreter's console script, not whatever PATH has
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "spp.cli.main"]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(cmd + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"spp {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return statistics.median(times)


def _publisher(location: str, blobs: list[bytes], start, out) -> None:
    """One publishing process: wait for the others, then publish every blob to one name."""
    reg = Registry(location)
    reg.names()  # connect before the start line
    start.wait()
    t0 = time.perf_counter()
    refs = [reg.publish(b, name="bench-concurrent")[0].version for b in blobs]
    out.put((refs, time.perf_counter() - t0))


def concurrent_publish(location: str, processes: int, each: int, n_tokens: int, d_model: int) -> dict:
    """``processes`` processes x ``each`` publishes to ONE name at once: throughput and numbering."""
    import multiprocessing as mp

    gen = torch.Generator().manual_seed(12345)
    work = [[artifact("bench-concurrent", p * each + i, n_tokens, d_model, gen) for i in range(each)] for p in range(processes)]
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [ctx.Process(target=_publisher, args=(location, blobs, start, out)) for blobs in work]
    for proc in procs:
        proc.start()
    start.wait()
    t0 = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.join()
    versions = sorted(v for refs, _ in results for v in refs)
    first = versions[0]
    return {"processes": processes, "publishes": len(versions), "wall_s": wall,
            "publishes_per_s": len(versions) / wall, "versions_contiguous": versions == list(range(first, first + len(versions)))}


def _replica(location: str, ready, seen, targets: list[int]) -> None:
    """A stand-in for a server replica: resolve bench@prod in a loop, as `spp serve` does per
    request, and report when each expected move has become visible."""
    reg = Registry(location)
    reg.resolve("bench-concurrent@prod")
    for target in targets:
        ready.wait()
        while reg.resolve("bench-concurrent@prod").version != target:
            pass
        seen.put(time.time())


def alias_propagation(location: str, moves: int) -> dict:
    """Seconds from an alias move's commit until two replica processes both resolve the new target."""
    import multiprocessing as mp

    reg = Registry(location)
    versions = [v.version for v in reg.list(name="bench-concurrent")]
    targets = [versions[i % 2] for i in range(1, moves + 1)]  # alternate between two versions
    reg.set_alias(f"bench-concurrent@{versions[0]}", "prod")
    ctx = mp.get_context("spawn")
    ready, seen = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_replica, args=(location, ready, seen, targets)) for _ in range(2)]
    for proc in procs:
        proc.start()
    delays = []
    for target in targets:
        ready.wait()
        time.sleep(0.05)  # both are polling the old target now
        reg.set_alias(f"bench-concurrent@{target}", "prod")
        committed = time.time()
        delays.append(max(seen.get(timeout=60) for _ in procs) - committed)
    for proc in procs:
        proc.join()
    return {"moves": moves, "replicas": 2, "mode": "per-request resolution (no TTL)", **percentiles(delays),
            "max_ms": 1000 * max(delays)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--versions", type=int, default=10_000)
    p.add_argument("--names", type=int, default=100)
    p.add_argument("--n-tokens", type=int, default=10)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--iterations", type=int, default=2000, help="resolve + load samples")
    p.add_argument("--repeats", type=int, default=3, help="runs of each CLI command (median)")
    p.add_argument("--keep", type=Path, help="build (or reuse) the directory registry here and keep it")
    p.add_argument("--registry", help="a shared registry (postgresql://...?store=...) to build in and measure; "
                   "it must be empty or hold exactly --versions versions from an earlier run")
    p.add_argument("--publishers", type=int, default=8, help="concurrent publisher processes (shared registry)")
    p.add_argument("--per-publisher", type=int, default=25, help="publishes per publisher process")
    p.add_argument("--moves", type=int, default=20, help="alias moves timed for propagation (shared registry)")
    p.add_argument("--device", default="cpu", help="where loaded prompts are put (cpu, cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="default: bench/results/registry.json (registry-postgres.json when shared)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    resolve_device(args.device)  # no GPU for --device cuda: one line now, not a traceback mid-run
    torch.set_num_threads(1)

    root = args.registry or str(args.keep or Path(tempfile.mkdtemp(prefix="spp-bench-registry-")))
    reg = Registry(root)
    shared = reg.location.shared
    existing = len(reg.list())
    build_stats: dict[str, float] = {}
    if existing == 0:
        print(f"building {args.versions} versions across {args.names} names in {reg.location} ...", file=sys.stderr)
        build_stats = build(reg, args.versions, args.names, args.n_tokens, args.d_model, args.seed)
    elif len(reg.list(name="task000")) * args.names != args.versions:
        raise SystemExit(f"{reg.location} holds {existing} versions, not {args.versions}; use an empty registry")
    per_name = args.versions // args.names
    lat = latency(root, args.names, per_name, args.iterations, args.seed, args.device)
    t0 = time.perf_counter()
    listed = reg.list()
    list_inproc = time.perf_counter() - t0
    list_wall = cli_wall(["list", "--json", "--registry", root], args.repeats)
    help_wall = cli_wall(["--help"], args.repeats)
    blob_bytes = sum(reg.store.size(sha) or 0 for sha, _ in reg.store.iter_blobs())
    result = {
        "config": {"registry": reg.location.display if shared else "directory (SQLite)", "versions": len(listed),
                   "names": len(reg.names()), "prompt": [args.n_tokens, args.d_model],
                   "iterations": args.iterations, "blob_bytes": blob_bytes, "device": args.device,
                   "blob_cache": "warm" if shared else None},
        "build": build_stats,
        "latency": lat,
        "list": {"spp_list_json_wall_s": list_wall, "spp_help_wall_s": help_wall, "registry_list_inprocess_s": list_inproc},
        "env": {**machine(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    if shared:
        result["publish_concurrent"] = concurrent_publish(root, args.publishers, args.per_publisher, args.n_tokens, args.d_model)
        result["alias_propagation"] = alias_propagation(root, args.moves)
    out = args.out or RESULTS.with_name("registry-postgres.json" if shared else "registry.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"saved {out}")
    if args.keep is None and not shared:
        shutil.rmtree(root, ignore_errors=True)


def print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg = r["config"]
    table = Table(title=f"registry: {cfg['versions']:,} versions, {cfg['names']} names, {cfg['prompt'][0]}x{cfg['prompt'][1]} prompts")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    lat = r["latency"]
    table.add_row("resolve + load p50", f"{lat['resolve_load']['p50_ms']:.2f} ms", "<= 5 ms")
    table.add_row("resolve + load p95 / p99", f"{lat['resolve_load']['p95_ms']:.2f} / {lat['resolve_load']['p99_ms']:.2f} ms", "")
    table.add_row("  CPU share during the loop / load avg", f"{lat['cpu_share']:.2f} / {r['env']['loadavg_1m']:.1f}", "")
    table.add_row("resolve only p50 / p99", f"{lat['resolve']['p50_ms']:.3f} / {lat['resolve']['p99_ms']:.3f} ms", "")
    table.add_row("spp list --json (wall, median)", f"{r['list']['spp_list_json_wall_s']:.2f} s", "")
    table.add_row("  of which CLI start (spp --help)", f"{r['list']['spp_help_wall_s']:.2f} s", "")
    table.add_row("Registry.list() in-process", f"{1000 * r['list']['registry_list_inprocess_s']:.0f} ms", "")
    if r["build"]:
        table.add_row("publish (build), mean per version", f"{r['build']['publish_ms_mean']:.1f} ms", "")
        table.add_row("build time", f"{r['build']['build_s']:.0f} s", "")
    if "publish_concurrent" in r:
        pc, ap = r["publish_concurrent"], r["alias_propagation"]
        table.add_row(f"{pc['processes']} publishers x one name", f"{pc['publishes_per_s']:.1f} publishes/s", "")
        table.add_row("  versions contiguous (no gap, no duplicate)", str(pc["versions_contiguous"]), "")
        table.add_row("alias move -> both replicas, p50 / max", f"{ap['p50_ms']:.1f} / {ap['max_ms']:.1f} ms", "")
    table.caption = f"{r['env']['cpu']}, {r['env']['cores']} cores"
    Console().print(table)


if __name__ == "__main__":
    entry(main)
