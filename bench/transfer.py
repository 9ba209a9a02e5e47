"""Benchmark: an S x T transfer matrix in mixed-prompt batches vs the naive loop, side by side.

    python bench/transfer.py --tokenizer ../shared/data/t5-tokenizer --data-dir ../shared/data/rte

Backbone ``random:t5-small`` (the real architecture, random weights: no download). Targets: T
tasks over RTE sentence pairs, each with its own template and label words (so no two targets
share an encoder input), ``--examples`` examples each (seeded samples of the local RTE train
file: its dev file has only 139 rows; ``--synthetic`` makes RTE-length texts instead).
Sources: S random prompts of n=10 tokens (scale of the embedding rows), one trained "on" each
target so that every column has an own prompt. Prompt values do not change the cost.

* naive: ``evaluate_prompt`` once per (source, target), what S x T separate ``spp eval`` runs
  do after loading (one prompt per batch, ``--naive-batch-size`` rows);
* mixed: :func:`spp.prompts.transfer.compute_transfer`, every source over a target's examples
  in mixed-prompt batches of ``--batch-size`` (example, prompt) rows.

Both run in the same process on the same backbone, interleaved per target (the order
alternates) so that load from other processes hits both alike. Each is timed in wall-clock
seconds and in CPU seconds of this process (``time.process_time``, all threads): on a shared
machine the wall clock also counts time spent waiting for a core, CPU time only the work
done. OpenMP threads are told to sleep rather than spin while they wait
(``OMP_WAIT_POLICY=PASSIVE``, unless set), so that waiting does not count as work. The
metrics of the two must be identical; the JSON records whether they are.
Results: ``bench/results/transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import torch  # noqa: E402

from spp.prompts.artifact import Artifact, ArtifactMeta  # noqa: E402
from spp.prompts.backbone import load_backbone  # noqa: E402
from spp.prompts.tasks.data import Example, TaskData, load_split  # noqa: E402
from spp.prompts.evaluate import evaluate_prompt  # noqa: E402
from spp.prompts.scoring import Scorer  # noqa: E402
from spp.prompts.tasks import TaskSpec  # noqa: E402
from spp.prompts.transfer.compute import TransferConfig, TransferSource, compute_transfer  # noqa: E402

RTE_LABELS = {"entailment": 0, "not_entailment": 1}
# (name, template, label words): eight ways to pose RTE, as different tasks would.
TEMPLATES = [
    ("rte", "rte sentence1: {premise} sentence2: {hypothesis}", ("entailment", "not_entailment")),
    ("entail", "premise: {premise} hypothesis: {hypothesis} entailed?", ("yes", "no")),
    ("nli", "nli {hypothesis} ? {premise}", ("true", "false")),
    ("imply", "Does \"{premise}\" imply \"{hypothesis}\"?", ("implied", "not implied")),
    ("follow", "{premise} Question: does it follow that {hypothesis}", ("follows", "does not follow")),
    ("support", "claim: {hypothesis} evidence: {premise}", ("supported", "unsupported")),
    ("infer", "infer: {premise} => {hypothesis}", ("valid", "invalid")),
    ("agree", "text a: {premise} text b: {hypothesis} agree:", ("agree", "disagree")),
]


def task_specs(n: int) -> list[TaskSpec]:
    if not 1 <= n <= len(TEMPLATES):
        raise SystemExit(f"--tasks must be 1..{len(TEMPLATES)}")
    return [TaskSpec(name=name, template=tpl, label_words=words, file_format="glue-tsv",
                     label_aliases=RTE_LABELS | {w: i for i, w in enumerate(words)},
                     columns={"tsv": {"premise": "sentence1", "hypothesis": "sentence2"}})
            for name, tpl, words in TEMPLATES[:n]]


def rte_data(spec: TaskSpec, data_dir: Path, n: int, seed: int) -> TaskData:
    data = load_split(spec, "train", data_dir=data_dir, max_samples=n, seed=seed)
    return TaskData(spec, "validation", data.examples, data.source)  # evaluated as its validation set


def synthetic_data(spec: TaskSpec, n: int, seed: int, vocab: list[str]) -> TaskData:
    """RTE-like lengths: premise ~ 45 words (long tail), hypothesis ~ 9 words."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        fields = {"premise": " ".join(rng.choices(vocab, k=max(8, int(rng.lognormvariate(3.7, 0.45))))),
                  "hypothesis": " ".join(rng.choices(vocab, k=rng.randint(5, 14)))}
        examples.append(Example(fields, spec.format(fields), rng.randint(0, 1)))
    return TaskData(spec, "validation", examples, {"id": "synthetic", "format": "synthetic"})


def sources_for(backbone, specs: list[TaskSpec], n_sources: int, n_tokens: int) -> list[TransferSource]:
    g = torch.Generator().manual_seed(0)
    scale = float(backbone.embedding.detach().float().std())
    out = []
    for i in range(n_sources):
        spec = specs[i % len(specs)]
        meta = ArtifactMeta(task=spec.name, method="simple", backbone=backbone.name, fingerprint=backbone.fingerprint,
                            d_model=backbone.d_model, n_tokens=n_tokens, task_spec=spec.to_dict())
        prompt = torch.randn(n_tokens, backbone.d_model, generator=g) * scale  # (n, e)
        out.append(TransferSource(f"{spec.name}@{i // len(specs) + 1}", Artifact(prompt, meta)))
    return out


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bb = load_backbone(args.backbone, tokenizer=args.tokenizer, device="cpu", dtype="float32")
    specs = task_specs(args.tasks)
    if args.synthetic:
        vocab = [w for w in bb.tokenizer.convert_ids_to_tokens(range(1000, 6000)) if w.startswith("▁")]
        targets = [synthetic_data(s, args.examples, j, [w[1:] for w in vocab]) for j, s in enumerate(specs)]
    else:
        targets = [rte_data(s, args.data_dir, args.examples, seed=j) for j, s in enumerate(specs)]
    sources = sources_for(bb, specs, args.sources, args.n_tokens)
    scorer = Scorer(bb)
    config = TransferConfig(batch_size=args.batch_size)
    warm = TaskData(targets[0].task, "validation", targets[0].examples[:4], {})
    evaluate_prompt(scorer, sources[0].prompt, warm)  # warm-up (allocator, MKL) before any timing
    compute_transfer(bb, sources[:2], [warm], config)
    load_start = os.getloadavg()[0]
    naive_metrics, per_target, mixed_results = [], [], []
    for j, data in enumerate(targets):
        def naive():
            return [evaluate_prompt(scorer, s.prompt, data, batch_size=args.naive_batch_size) for s in sources]

        def mixed():
            return compute_transfer(bb, sources, [data], config)

        order = [("naive", naive), ("mixed", mixed)] if j % 2 == 0 else [("mixed", mixed), ("naive", naive)]
        row: dict = {"task": data.task.name, "rows": len(sources) * len(data)}
        outs = {}
        for name, fn in order:
            w0, c0 = time.perf_counter(), time.process_time()
            outs[name] = fn()
            row[f"{name}_s"], row[f"{name}_cpu_s"] = time.perf_counter() - w0, time.process_time() - c0
        row["load_avg_1m"] = os.getloadavg()[0]
        naive_metrics.append(outs["naive"])
        mixed_results.append(outs["mixed"])
        per_target.append(row)
        print(f"{data.task.name:>8}: naive {row['naive_s']:7.1f} s ({row['naive_cpu_s']:7.1f} cpu)  "
              f"mixed {row['mixed_s']:7.1f} s ({row['mixed_cpu_s']:7.1f} cpu)", file=sys.stderr)
    differing = sum(naive_metrics[j][i] != mixed_results[j].metrics[i][0]
                    for j in range(len(targets)) for i in range(len(sources)))
    total = {k: sum(r[k] for r in per_target) for k in ("naive_s", "mixed_s", "naive_cpu_s", "mixed_cpu_s", "rows")}
    naive_s, mixed_s, rows = total["naive_s"], total["mixed_s"], total["rows"]
    tokens = [len(bb.tokenizer(t).input_ids) for d in targets for t in d.texts]
    return {
        "benchmark": "transfer",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": "cpu",
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "config": {"backbone": args.backbone, "sources": len(sources), "targets": len(targets),
                   "examples_per_task": args.examples, "n_tokens": args.n_tokens, "mixed_batch_size": args.batch_size,
                   "naive_batch_size": args.naive_batch_size,
                   "data": "synthetic RTE-length" if args.synthetic else f"RTE train.tsv samples ({args.data_dir})",
                   "mean_input_tokens": sum(tokens) / len(tokens), "max_input_tokens": max(tokens)},
        "load_avg_1m": {"start": load_start, "end": os.getloadavg()[0]},
        "rows": rows,
        "naive_s": naive_s,
        "mixed_s": mixed_s,
        "naive_cpu_s": total["naive_cpu_s"],
        "mixed_cpu_s": total["mixed_cpu_s"],
        "ratio": mixed_s / naive_s,
        "ratio_cpu": total["mixed_cpu_s"] / total["naive_cpu_s"],
        "target_ratio": 0.5,
        "meets_target": mixed_s / naive_s <= 0.5,
        "meets_target_cpu": total["mixed_cpu_s"] / total["naive_cpu_s"] <= 0.5,
        "rows_per_s": {"naive": rows / naive_s, "mixed": rows / mixed_s},
        "identical_metrics": differing == 0,
        "differing_cells": differing,
        "per_target": per_target,
    }


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="random:t5-small")
    p.add_argument("--tokenizer", default=str(here.parent.parent / "shared" / "data" / "t5-tokenizer"),
                   help="t5 tokenizer directory (a random: backbone has none offline)")
    p.add_argument("--data-dir", type=Path, default=here.parent.parent / "shared" / "data" / "rte",
                   help="folder with RTE's train.tsv (GLUE format)")
    p.add_argument("--synthetic", action="store_true", help="RTE-length synthetic texts instead of RTE")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--sources", type=int, default=8)
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--n-tokens", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="mixed: (example, prompt) rows per batch")
    p.add_argument("--naive-batch-size", type=int, default=32, help="naive: spp eval's default batch size")
    p.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--out", type=Path, default=here / "results" / "transfer.json")
    args = p.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("naive_s", "mixed_s", "ratio", "naive_cpu_s", "mixed_cpu_s", "ratio_cpu", "identical_metrics")
    print(json.dumps({k: result[k] for k in keys},
                     indent=2))


if __name__ == "__main__":
    main()
