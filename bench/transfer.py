"""Benchmark: an S x T transfer matrix in mixed-prompt batches vs single-prompt scoring and vs a
PEFT generate loop, side by side.

    python bench/transfer.py --tokenizer /work/shared/data/t5-tokenizer --data-dir /work/shared/data/rte
    python bench/transfer.py --device cuda ...     # bf16 on a GPU

Backbone ``random:google/t5-small-lm-adapt`` in ``--dtype auto`` (the real architecture, random weights: no download). Targets: T
tasks over RTE sentence pairs, each with its own template and label words (so no two targets
share an encoder input), ``--examples`` examples each (seeded samples of the local RTE train
file: its dev file has only 139 rows; ``--synthetic`` makes RTE-length texts instead).
Sources: S random prompts of n=10 tokens (scale of the embedding rows), one trained "on" each
target so that every column has an own prompt. Prompt values do not change the cost.

* naive (single-prompt bare scoring): ``evaluate_prompt`` once per (source, target), what S x T
  separate ``spp eval`` runs do after loading (one prompt per batch, ``--naive-batch-size`` rows),
  each batch scored in shards at once as ``spp eval`` does;
* mixed: :func:`spp.prompts.transfer.compute_transfer`, every source over a target's examples
  in mixed-prompt batches of ``--batch-size`` (example, prompt) rows, each scored in shards at
  once too. Both use ``--shards`` (default: theirs, 2 on a CPU, one thread each;
  spp.prompts.parallel) and ``--compile`` (default: what ``spp transfer`` does for this matrix's
  size), so the ratio compares batching alone;
* peft: a Prompt-Transferability-style loop: PEFT prompt tuning with one adapter per source,
  ``set_adapter`` then batched ``generate`` over the target's first ``--peft-examples``
  examples, prompt by prompt (rows/s is a rate, so a subset measures it).

Targets (issue 11): mixed rows/s >= 0.95 x single-prompt rows/s, and >= 3 x the PEFT loop's.
MFU of mixed and single from spp.prompts.flops against the in-run GEMM peak of the dtype
(measured before and after the timings, the higher counts).

Both run in the same process on the same backbone, interleaved per target (the order
alternates) so that load from other processes hits both alike. Each is timed in wall-clock
seconds and in CPU seconds of this process (``time.process_time``, all threads): on a shared
machine the wall clock also counts time spent waiting for a core, CPU time only the work
done. OpenMP threads are told to sleep rather than spin while they wait
(``OMP_WAIT_POLICY=PASSIVE``, unless set), so that waiting does not count as work. The
metrics of the two must be identical; the JSON records whether they are.
Results: ``bench/results/transfer.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import torch  # noqa: E402
from common import backbone_record, entry, machine, peak_for, sync  # noqa: E402

from spp.prompts.artifact import Artifact, ArtifactMeta  # noqa: E402
from spp.prompts.backbone import load_backbone  # noqa: E402
from spp.prompts.tasks.data import Example, TaskData, load_split  # noqa: E402
from spp.prompts.evaluate import evaluate_prompt  # noqa: E402
from spp.prompts.flops import mfu, scoring_flops  # noqa: E402
from spp.prompts.parallel import ShardedScore  # noqa: E402
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


def peft_model(bb, sources: list[TransferSource], n_tokens: int):
    """HF PEFT prompt tuning on (a copy of) the backbone, one adapter per source prompt."""
    import copy

    from peft import PromptTuningConfig, TaskType, get_peft_model

    cfg = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=n_tokens, num_transformer_submodules=1)
    model = get_peft_model(copy.deepcopy(bb.model), cfg, adapter_name="s0")
    for i in range(1, len(sources)):
        model.add_adapter(f"s{i}", cfg)
    for i, src in enumerate(sources):
        model.prompt_encoder[f"s{i}"].embedding.weight.data.copy_(src.prompt)
    model.prompt_encoder.to(bb.dtype)
    return model.eval()


@torch.no_grad()
def peft_loop(model, bb, data: TaskData, n_sources: int, args) -> tuple[int, float]:
    """Prompt by prompt: set_adapter, then generate the label over the examples in batches."""
    texts = data.texts[: args.peft_examples]
    limit = max(len(t) for t in bb.label_token_ids(data.task.label_words))
    sync(bb.device)
    t0 = time.perf_counter()
    for i in range(n_sources):
        model.set_adapter(f"s{i}")
        for a in range(0, len(texts), args.naive_batch_size):
            enc = bb.tokenizer(texts[a : a + args.naive_batch_size], padding=True, return_tensors="pt").to(bb.device)
            model.generate(**enc, max_new_tokens=limit, do_sample=False)
    sync(bb.device)
    return n_sources * len(texts), time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bb = load_backbone(args.backbone, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype)
    specs = task_specs(args.tasks)
    if args.synthetic:
        vocab = [w for w in bb.tokenizer.convert_ids_to_tokens(range(1000, 6000)) if w.startswith("▁")]
        targets = [synthetic_data(s, args.examples, j, [w[1:] for w in vocab]) for j, s in enumerate(specs)]
    else:
        targets = [rte_data(s, args.data_dir, args.examples, seed=j) for j, s in enumerate(specs)]
    sources = sources_for(bb, specs, args.sources, args.n_tokens)
    config = TransferConfig(batch_size=args.batch_size, compile=args.compile, shards=args.shards)
    scorer = Scorer(bb, compile=config.compiles(len(sources) * sum(len(t) for t in targets)))
    with ShardedScore.planned(scorer, args.shards) as sharded:
        sharded.warm_up(scorer)  # as compute_transfer does
        def naive(data: TaskData) -> list[dict]:
            return [evaluate_prompt(scorer, s.prompt, data, batch_size=args.naive_batch_size, score=sharded)
                    for s in sources]

        def mixed(data: TaskData):
            return compute_transfer(bb, sources, [data], config)

        warm = TaskData(targets[0].task, "validation", targets[0].examples[:4], {})
        naive(warm), mixed(warm)  # warm-up (allocator, MKL, compiling) before any timing
        peft = peft_model(bb, sources, args.n_tokens)
        peft_loop(peft, bb, warm, 1, args)
        load_start, first_peak = os.getloadavg()[0], peak_for(bb)
        timed = [time_target(j, data, naive, mixed, lambda d: peft_loop(peft, bb, d, len(sources), args),
                             bb.device)
                 for j, data in enumerate(targets)]
        return dict(summary(args, bb, targets, sources, timed, first_peak), load_avg_1m={"start": load_start,
                                                                              "end": os.getloadavg()[0]},
                    shards={"shards": sharded.shards, "threads_per_shard": sharded.threads},
                    compiled=scorer.compiled)


def time_target(j: int, data: TaskData, naive, mixed, peft, device) -> tuple[dict, list[dict], object]:
    """One target's row of timings: naive and mixed in alternating order, then the PEFT loop."""
    order = [("naive", naive), ("mixed", mixed)] if j % 2 == 0 else [("mixed", mixed), ("naive", naive)]
    row: dict = {"task": data.task.name}
    outs = {}
    for name, fn in order:
        sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        outs[name] = fn(data)
        sync(device)
        row[f"{name}_s"], row[f"{name}_cpu_s"] = time.perf_counter() - w0, time.process_time() - c0
    row["rows"] = len(outs["naive"]) * len(data)
    row["peft_rows"], row["peft_s"] = peft(data)
    row["load_avg_1m"] = os.getloadavg()[0]
    print(f"{data.task.name:>8}: naive {row['naive_s']:7.1f} s ({row['naive_cpu_s']:7.1f} cpu)  "
          f"mixed {row['mixed_s']:7.1f} s ({row['mixed_cpu_s']:7.1f} cpu)", file=sys.stderr)
    return row, outs["naive"], outs["mixed"]


def summary(args, bb, targets: list[TaskData], sources: list[TransferSource], timed: list[tuple],
            first_peak: dict) -> dict:
    """Totals, rates, MFU and ratios of the per-target timings; whether the metrics agree. MFU is
    against the higher of the GEMM peaks measured before the timings (``first_peak``) and now."""
    per_target = [row for row, _, _ in timed]
    differing = sum(naive[i] != mixed.metrics[i][0] for _, naive, mixed in timed for i in range(len(sources)))
    keys = ("naive_s", "mixed_s", "naive_cpu_s", "mixed_cpu_s", "rows", "peft_rows", "peft_s")
    total = {k: sum(r[k] for r in per_target) for k in keys}
    naive_s, mixed_s, rows = total["naive_s"], total["mixed_s"], total["rows"]
    lengths = [(d, len(bb.tokenizer(t).input_ids)) for d in targets for t in d.texts]  # each text tokenized once
    tokens = [n for _, n in lengths]
    flops = len(sources) * sum(scoring_flops(bb.model.config, args.n_tokens + n, bb.label_token_ids(d.task.label_words))
                               for d, n in lengths)
    peak = peak_for(bb, first_peak)
    rates = {"naive": rows / naive_s, "mixed": rows / mixed_s, "peft": total["peft_rows"] / total["peft_s"]}
    return {
        "benchmark": "transfer",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": dict(machine(), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY")),
        "backbone": backbone_record(bb),
        "peak": peak,
        "mfu": {"naive": mfu(flops, naive_s, peak["flops_per_s"]), "mixed": mfu(flops, mixed_s, peak["flops_per_s"])},
        "targets": {"mixed/single rows per s": 0.95, "mixed/peft rows per s": 3.0},
        "ratios": {"mixed/single rows per s": rates["mixed"] / rates["naive"],
                   "mixed/peft rows per s": rates["mixed"] / rates["peft"]},
        "config": {"backbone": args.backbone, "sources": len(sources), "targets": len(targets),
                   "examples_per_task": args.examples, "n_tokens": args.n_tokens, "mixed_batch_size": args.batch_size,
                   "naive_batch_size": args.naive_batch_size, "peft_examples": args.peft_examples,
                   "compile": args.compile,
                   "data": "synthetic RTE-length" if args.synthetic else f"RTE train.tsv samples ({args.data_dir})",
                   "mean_input_tokens": sum(tokens) / len(tokens), "max_input_tokens": max(tokens)},
        "rows": rows,
        "naive_s": naive_s,
        "mixed_s": mixed_s,
        "naive_cpu_s": total["naive_cpu_s"],
        "mixed_cpu_s": total["mixed_cpu_s"],
        "ratio": mixed_s / naive_s,
        "ratio_cpu": total["mixed_cpu_s"] / total["naive_cpu_s"],
        "rows_per_s": rates,
        "identical_metrics": differing == 0,
        "differing_cells": differing,
        "per_target": per_target,
    }


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="random:google/t5-small-lm-adapt")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="auto", help="auto (bf16 where native and faster), float32, bfloat16")
    p.add_argument("--peft-examples", type=int, default=64, help="examples per target in the PEFT loop")
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
    p.add_argument("--naive-batch-size", type=int, default=64, help="single-prompt (and PEFT) rows per batch")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed and single-prompt: TransferConfig(compile=...), `spp transfer --compile` (compiled "
                        "during the warm-up, before any timing; PEFT stays eager). Default: what `spp transfer` "
                        "does for this matrix (compiled from AUTO_COMPILE_ROWS (example, prompt) rows)")
    p.add_argument("--shards", type=int, default=None, help="both: TransferConfig(shards=...) / `spp transfer "
                   "--shards` and `spp eval --shards` (default: theirs, 2 on a CPU)")
    p.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--out", type=Path, default=here / "results" / "transfer.json")
    args = p.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("rows_per_s", "ratios", "targets", "mfu", "ratio_cpu", "identical_metrics")
    print(json.dumps({k: result[k] for k in keys}, indent=2))


if __name__ == "__main__":
    entry(main)
