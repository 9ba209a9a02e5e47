"""Where one scoring batch's time goes: tokenize, encoder, decoder + head, the whole call, and
the call on a shard thread; then a profiler table. With --compile: eager vs compiled forwards.

On a GPU the host's work per batch (Python, kernel launches, syncs) decides the rate for a model
of t5-small's size; each stage is timed with a device sync after it (median of --repeats).

    python bench/stages.py --tokenizer /work/shared/data/t5-tokenizer --rte /work/shared/data/rte --device cuda
    python bench/stages.py ... --device cuda --compile     # adds the compile time and eager vs compiled
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from common import entry, machine, sync

from spp.prompts.backbone import load_backbone
from spp.prompts.parallel import ShardedScore
from spp.prompts.scoring import LabelSet, Scorer


def median_ms(fn, device, repeats: int) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def stages(sc: Scorer, texts: list[str], prompts, labels: LabelSet, device, repeats: int) -> dict:
    ls = [labels] * len(texts)
    ids, mask = sc.tokenize(texts)
    enc = sc.encode(ids, mask, prompts)
    out = {"tokenize": median_ms(lambda: sc.tokenize(texts), device, repeats),
           "encode": median_ms(lambda: sc.encode(ids, mask, prompts), device, repeats),
           "decode": median_ms(lambda: sc.candidate_loglik(enc, ls), device, repeats),
           "score": median_ms(lambda: sc.score(texts, prompts, ls), device, repeats)}
    with ShardedScore(sc.score, 1, None) as sharded:
        out["score_on_shard_thread"] = median_ms(lambda: sharded(texts, prompts, ls), device, repeats)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="random:google/t5-small-lm-adapt")
    p.add_argument("--tokenizer", default=None, help="a T5 tokenizer dir (random: backbones offline need one)")
    p.add_argument("--rte", type=Path, required=True, help="GLUE RTE folder (train.tsv)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--compile", action="store_true", help="also time compiled forwards (whole encoder/decoder)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stages.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    bb = load_backbone(args.backbone, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype)
    with (args.rte / "train.tsv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [f"rte premise: {r['sentence1']} hypothesis: {r['sentence2']}" for r in rows]
    labels = LabelSet.build(bb, ("entailment", "not_entailment"))
    prompts = [torch.randn(10, bb.d_model, device=bb.device) for _ in range(8)]  # 8 tasks' prompts
    eager = Scorer(bb)
    res: dict = {"machine": machine(), "dtype": str(bb.dtype), "packed": eager.packed, "stages_ms": {}}
    for B in (8, 64):
        for kind, chosen in (("one prompt", prompts[0]), ("8 prompts", [prompts[i % 8] for i in range(B)])):
            r = res["stages_ms"][f"{B} rows, {kind}"] = stages(eager, texts[:B], chosen, labels, bb.device, args.repeats)
            print(f"{B:>2} rows, {kind:<10}", {k: round(v, 2) for k, v in r.items()}, flush=True)
    if args.compile:
        t0 = time.perf_counter()
        compiled = Scorer(bb, compile=True)
        compiled.warm_up()
        sync(bb.device)
        res["compile_s"], res["compiled"] = time.perf_counter() - t0, compiled.compiled
        print(f"compiled ({compiled.compiled}) in {res['compile_s']:.1f} s", flush=True)
        for B in (8, 64):
            chosen, ls = [prompts[i % 8] for i in range(B)], [labels] * B
            e, c = (median_ms(lambda s=s: s.score(texts[:B], chosen, ls), bb.device, args.repeats)
                    for s in (eager, compiled))
            res[f"{B} rows, 8 prompts: eager vs compiled ms"] = [e, c]
            print(f"{B:>2} rows, 8 prompts: eager {e:.2f} ms, compiled {c:.2f} ms", flush=True)
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bb.device.type == "cuda" else [])
    chosen = [prompts[i % 8] for i in range(64)]
    with profile(activities=acts) as prof:
        for _ in range(3):
            eager.score(texts[:64], chosen, [labels] * 64)
            sync(bb.device)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    entry(main)
