"""Serving benchmark (issue 4): one frozen T5, many task prompts, mixed-task batching over HTTP.

Measurements in ONE run, side by side, on the same inputs and prompts:

  (a) one task: 64 closed-loop HTTP clients on loopback, every request for task0;
  (b) 8 tasks uniformly mixed: the same clients, each request for a random task;
  (c) the usual alternative: one request at a time through a PEFT prompt-tuning model
      (PromptTuningConfig, num_transformer_submodules=1), ``set_adapter`` per request, then
      ``generate`` (output length forced to the label words' 5-6 tokens, as a trained model
      would emit; no HTTP, so the baseline's best case);
  (d) the ceiling: the bare batched scoring forward (Scorer.score on mixed-task batches of
      random inputs in arrival order, no server, no HTTP), at its best batch size: the server's
      own schedule where it runs unpadded forwards (each batch as it forms, in its shards), so the
      issue's "server / bare scoring with the server's own schedule" is b/d there;
  (d2) a stricter ceiling: the best bare schedule measured, plain batches of every
      ``--bare-batch-sizes`` and 64-row batches sorted by length and scored ``--micro-sizes``
      rows per forward; the server's own schedule (one unpadded forward per batch, or sorted
      micro-batches where forwards are padded) is among them, so b/d2 is at most the share of
      pure compute the server delivers over HTTP (the target ratio where forwards are padded);
  (e) the server as it was before ``--dtype auto``: the same clients as (a), ``--dtype float32``
      (skip with ``--no-float32``), so a/e is what the bf16 default alone buys on this machine;
  (f) with ``--baseline-spp PATH``: another install's server (the ``spp`` executable of, say,
      the release before this one, in its own virtualenv) with ITS defaults and the same clients
      as (a), on a registry its own ``spp publish`` fills: a/f is what users gain by upgrading.

The servers run with their DEFAULT settings (batch size, wait, dtype ``auto``, compile): what users
get; the bare scorer of (d)/(d2) runs the forwards the server chose (compiled if it compiled)
and its schedule: each batch in as many shards at once, on as many CPU threads each (/health).
MFU of every scenario: requests/s x the mean FLOPs of one request (spp.prompts.flops, from the
inputs' token counts) over the in-run GEMM peak of the dtype the server chose (its /health;
measured before and after the rounds, the higher counts), or the GPU's datasheet bf16 peak.

Each request carries one RTE-like input (premise + hypothesis: from GLUE RTE TSV files with
``--rte-dir``, else synthetic sentences of RTE's length). Scenarios run interleaved over
``--rounds`` so that background load drifts affect them alike. Requests/s, p50/p99 latency
and mean batch size (from the server's /metrics) go to ``--out`` as JSON, with the machine.

    python bench/serve.py --tokenizer /work/shared/data/t5-tokenizer --rte-dir /work/shared/data/rte \
        --duration 60 --rounds 2      # add --device cuda on a GPU machine
    # (f): what upgrading buys, against an older release installed in its own virtualenv
    git worktree add /tmp/spp-old-src <rev> && python -m venv --system-site-packages /tmp/spp-old \
        && /tmp/spp-old/bin/pip install -e /tmp/spp-old-src
    python bench/serve.py ... --baseline-spp /tmp/spp-old/bin/spp
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from common import BareScorer, entry, machine, peak_for, peak_of  # noqa: E402
from serve_http import Server, http_scenario, publish_with  # noqa: E402

from spp.prompts.artifact import Artifact, ArtifactMeta, save_artifact  # noqa: E402
from spp.prompts.flops import mfu, scoring_flops  # noqa: E402
from spp.prompts.backbone import Backbone, load_backbone  # noqa: E402
from spp.prompts.tasks import get_task  # noqa: E402
from spp.prompts.scoring import LabelSet, ScoreFn  # noqa: E402

RTE = get_task("rte")
WORDS = ("the a of to in and that is was for on with as by at from report company said year new people "
         "government police president state city officials first two percent court market million group").split()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="random:google/t5-small-lm-adapt")
    p.add_argument("--tokenizer", default=None, help="tokenizer id/dir (random:<name> offline needs one)")
    p.add_argument("--rte-dir", type=Path, default=None, help="folder with GLUE RTE train.tsv/dev.tsv")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--n-tokens", type=int, default=10)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per scenario (all rounds)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of a, b, c, d (load drift)")
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each HTTP window")
    p.add_argument("--dtype", default=None, help="pass --dtype to the server (default: the server's, auto)")
    p.add_argument("--no-float32", action="store_true", help="skip (e), the --dtype float32 server")
    p.add_argument("--baseline-spp", default=None, help="(f): the `spp` executable of another install (e.g. "
                   "an older release in its own venv) whose default server a/f compares with")
    p.add_argument("--server-args", default="", help="extra `spp serve` flags for the (a)/(b) server, e.g. "
                   "--server-args=--compile")
    p.add_argument("--bare-batch-sizes", default="1,8,16,32,64")
    p.add_argument("--micro-sizes", default="8,16,32", help="(d2) also tries 64-row batches sorted, this many rows per forward")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-log", type=Path, default=None, help="keep the server's log (debug level) here")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    args = p.parse_args(argv)
    args.bare_batch_sizes = [int(x) for x in args.bare_batch_sizes.split(",")]
    args.micro_sizes = [int(x) for x in args.micro_sizes.split(",") if x]
    return args


# ---------------------------------------------------------------------------------- inputs
def load_inputs(rte_dir: Path | None, seed: int) -> tuple[list[dict[str, str]], str]:
    """RTE premise/hypothesis pairs from GLUE TSV files, else synthetic pairs of RTE's length."""
    if rte_dir is not None:
        rows: list[dict[str, str]] = []
        for name in ("train.tsv", "dev.tsv"):
            path = rte_dir / name
            if path.is_file():
                with path.open(newline="", encoding="utf-8") as fh:
                    reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
                    rows += [{"premise": r["sentence1"], "hypothesis": r["sentence2"]} for r in reader]
        if rows:
            return rows, f"GLUE RTE TSV in {rte_dir} ({len(rows)} pairs)"
    rng = random.Random(seed)
    rows = [{"premise": " ".join(rng.choices(WORDS, k=rng.randint(15, 120))) + ".",
             "hypothesis": " ".join(rng.choices(WORDS, k=rng.randint(5, 15))) + "."} for _ in range(2000)]
    return rows, "synthetic pairs of RTE length (premise 15-120 words, hypothesis 5-15)"


def make_artifacts(backbone: Backbone, tasks: int, n_tokens: int, seed: int) -> list[Artifact]:
    out = []
    for i in range(tasks):
        gen = torch.Generator().manual_seed(seed + i)
        meta = ArtifactMeta(task="rte", method="simple", backbone=backbone.name, fingerprint=backbone.fingerprint,
                            d_model=backbone.d_model, n_tokens=n_tokens, task_spec=RTE.to_dict(),
                            method_config={"n_tokens": n_tokens})
        out.append(Artifact(prompt=torch.randn(n_tokens, backbone.d_model, generator=gen) * 0.5, meta=meta))
    return out


# --------------------------------------------------------------------------- baselines (c), (d)
def peft_model(args: argparse.Namespace, artifacts: list[Artifact]):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    base = load_backbone(args.backbone, tokenizer=args.tokenizer, device=args.device, dtype=args.peft_dtype)
    cfg = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=args.n_tokens,
                             num_transformer_submodules=1)
    model = get_peft_model(base.model, cfg, adapter_name="task0")
    for i in range(1, len(artifacts)):
        model.add_adapter(f"task{i}", cfg)
    for i, art in enumerate(artifacts):  # the same prompts as the server's
        model.prompt_encoder[f"task{i}"].embedding.weight.data.copy_(art.prompt)
    model.prompt_encoder.to(base.dtype)  # PEFT concatenates its prompt with the token embeddings
    model.eval()
    return model, base.tokenizer


@torch.no_grad()
def peft_scenario(model, tokenizer, labels: LabelSet, inputs, tasks: int, seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    lengths = [len(t) for t in labels.token_ids]
    latencies: list[float] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        model.set_adapter(f"task{rng.randrange(tasks)}")
        enc = tokenizer([RTE.format(rng.choice(inputs))], return_tensors="pt").to(model.device)
        model.generate(**enc, min_new_tokens=min(lengths), max_new_tokens=max(lengths), do_sample=False)
        latencies.append(time.perf_counter() - t0)
    return {"requests": len(latencies), "seconds": sum(latencies), "latencies": latencies}


def bare_scenario(score: ScoreFn, labels: LabelSet, prompts, inputs, batch_size: int, seconds: float,
                  seed: int, micro: int | None = None) -> dict:
    """``score`` (Scorer.score, or the server's sharded schedule of it) on batches of random
    inputs and random tasks, as requests arrive; no server.

    Not sorted across batches: offline evaluation (score_texts) sorts a whole split by length
    so that batches pad little, which a server answering requests as they come cannot do.
    With ``micro``, each batch is sorted by length and scored ``micro`` rows per forward: the
    server's own schedule on a CPU (spp.serve.tuning), without the server.
    """
    rng = random.Random(seed)
    rows, batch_times = 0, []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or not batch_times:
        texts = [RTE.format(x) for x in rng.choices(inputs, k=batch_size)]
        chosen = [rng.choice(prompts) for _ in texts]
        step = micro or batch_size
        t0 = time.perf_counter()
        if micro:
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            texts, chosen = [texts[i] for i in order], [chosen[i] for i in order]
        for a in range(0, batch_size, step):
            score(texts[a : a + step], chosen[a : a + step], [labels] * len(texts[a : a + step]))
        batch_times.append(time.perf_counter() - t0)
        rows += len(texts)
    return {"requests": rows, "seconds": sum(batch_times), "latencies": batch_times, "rows": rows,
            "batches": len(batch_times)}


# ----------------------------------------------------------------------------------- report
def merge(parts: list[dict]) -> dict:
    """Pool rounds: rates averaged (HTTP), or total requests over total busy seconds (in-process)."""
    lat = sorted(x for p in parts for x in p["latencies"])
    n = sum(p["requests"] for p in parts)
    if all("rate" in p for p in parts):
        rate = statistics.mean(p["rate"] for p in parts)
    else:
        secs = sum(p["seconds"] for p in parts)
        rate = n / secs if secs else 0.0
    rows, batches = sum(p.get("rows", 0) for p in parts), sum(p.get("batches", 0) for p in parts)
    per_round = [p["rate"] if "rate" in p else p["requests"] / p["seconds"] for p in parts]
    return {
        "requests_per_s": rate,
        "rounds": [round(x, 3) for x in per_round],
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        "mean_batch_size": rows / batches if batches else 1.0,
        "requests": n,
    }


def table(results: dict) -> str:
    names = {"f": "(f) baseline install's server (--baseline-spp), 1 task, its defaults",
             "e": "(e) spp server, 1 task, --dtype float32",
             "a": "(a) spp server, 1 task", "b": "(b) spp server, 8 tasks mixed",
             "c": "(c) PEFT, 1 request at a time, set_adapter + generate", "d": "(d) bare batched scoring, no server",
             "d2": "(d2) bare scoring, the best schedule measured (the server's among them)"}
    lines = ["| scenario | requests/s | MFU | p50 ms | p99 ms | mean batch |", "|---|---:|---:|---:|---:|---:|"]
    for key, name in names.items():
        if key not in results["scenarios"]:
            continue
        r = results["scenarios"][key]
        share = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
        lines.append(f"| {name} | {r['requests_per_s']:.2f} | {share} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['mean_batch_size']:.1f} |")
    ratios = results["ratios"]
    lines.append("")
    targets = results["targets"]
    lines.append(" ".join(f"{k} = {v:.2f}" + (f" (target >= {targets[k]})" if k in targets else "")
                          for k, v in ratios.items()))
    return "\n".join(lines)


def run_rounds(args, server: Server, bare_scorer: BareScorer, labels: LabelSet, artifacts, inputs,
               server32: Server | None, baseline: Server | None) -> tuple[dict, dict]:
    """Interleave the scenarios; odd rounds run them in reverse so a linear drift in background
    load affects (a) and (b), and the server and the baselines, alike."""
    peft, peft_tok = peft_model(args, artifacts)
    prompts = [a.prompt.to(bare_scorer.device) for a in artifacts]
    names = [f"task{i}" for i in range(args.tasks)]
    slice_s = args.duration / args.rounds
    parts: dict[str, list] = {"a": [], "b": [], "c": [], "d": []} | ({"e": []} if server32 else {})
    parts |= {"f": []} if baseline else {}
    bare: dict[str, list] = {str(b): [] for b in args.bare_batch_sizes}
    bare.update({f"64 sorted, {m} per forward": [] for m in args.micro_sizes})

    def run_bare(seed: int) -> None:
        # odd rounds reverse the schedules' order too, as they do the scenarios', so that drift
        # in background load affects every schedule alike
        schedules = [(str(b), b, None) for b in args.bare_batch_sizes]
        schedules += [(f"64 sorted, {m} per forward", 64, m) for m in args.micro_sizes]
        for key, size, micro in schedules[:: 1 if (seed - args.seed) % 2 == 0 else -1]:
            bare[key].append(bare_scenario(bare_scorer.score, labels, prompts, inputs, size, slice_s / len(bare),
                                           seed, micro=micro))

    steps = {
        "a": lambda seed: parts["a"].append(http_scenario(server, args, names[:1], inputs, slice_s, seed)),
        "b": lambda seed: parts["b"].append(http_scenario(server, args, names, inputs, slice_s, seed)),
        "c": lambda seed: parts["c"].append(peft_scenario(peft, peft_tok, labels, inputs, args.tasks, slice_s, seed)),
        "d": run_bare,
        "e": lambda seed: parts["e"].append(http_scenario(server32, args, names[:1], inputs, slice_s, seed)),
        "f": lambda seed: parts["f"].append(http_scenario(baseline, args, names[:1], inputs, slice_s, seed)),
    }
    for r in range(args.rounds):
        order = "".join(k for k in "feabcd" if k in parts)
        order = order if r % 2 == 0 else order[::-1]
        print(f"round {r + 1}/{args.rounds}: {', '.join(order)}", file=sys.stderr)
        for key in order:
            steps[key](args.seed + r)
    return parts, bare


def peaks(backbone: Backbone, earlier: dict | None = None) -> dict:
    """The GEMM peaks of the server's dtype and of float32 (for (e)); with ``earlier`` (the
    measurement before the rounds), the higher of then and now (bench/common.peak_for)."""
    earlier = earlier or {}
    peak = peak_for(backbone, earlier.get("peak"))
    if backbone.dtype == torch.float32:  # the same measurement: not taken twice
        return {"peak": peak, "peak_float32": peak}
    return {"peak": peak, "peak_float32": peak_of(torch.float32, backbone, earlier.get("peak_float32"))}


def request_flops(backbone: Backbone, labels: LabelSet, inputs, n_tokens: int) -> float:
    """Mean model FLOPs of scoring one request (one input), over the benchmark's inputs."""
    sample = inputs[:500]
    tokens = [len(backbone.tokenizer(RTE.format(x)).input_ids) for x in sample]
    cfg = backbone.model.config
    return sum(scoring_flops(cfg, n_tokens + t, labels.token_ids) for t in tokens) / len(tokens)


def summarize(args, parts: dict, bare: dict, load: list[float], source: str, compute: dict) -> dict:
    by_size = {b: merge(p) for b, p in bare.items()}
    plain = [str(b) for b in args.bare_batch_sizes]
    best = max(plain, key=lambda b: by_size[b]["requests_per_s"])
    scenarios = {k: merge(v) for k, v in parts.items() if k != "d"}
    scenarios["d"] = dict(by_size[best], best_batch_size=int(best),
                          by_batch_size={b: round(v["requests_per_s"], 3) for b, v in by_size.items()})
    rps = {k: v["requests_per_s"] for k, v in scenarios.items()}
    if len(by_size) > 1:  # (d2): the best schedule measured, so it covers the server's own (one
        # packed forward per batch, or length-sorted micro-batches where forwards are padded)
        best2 = max(by_size, key=lambda b: by_size[b]["requests_per_s"])
        scenarios["d2"] = dict(by_size[best2], schedule=best2)
        rps["d2"] = scenarios["d2"]["requests_per_s"]
    ratios = {"b/a": rps["b"] / rps["a"], "b/d": rps["b"] / rps["d"], "b/c": rps["b"] / rps["c"]}
    if "d2" in rps:
        ratios["b/d2"] = rps["b"] / rps["d2"]
    # the bare run of the server's own schedule: plain batches for unpadded forwards, else (d2)
    own_schedule = "b/d" if compute["server_health"].get("packed") or "b/d2" not in ratios else "b/d2"
    if "e" in rps:
        ratios["a/e"] = rps["a"] / rps["e"]
    if "f" in rps:
        ratios["a/f"] = rps["a"] / rps["f"]
    for key, r in scenarios.items():
        if key != "c":  # (c) generates: not the scoring FLOPs the formula counts
            peak = compute["peak_float32" if key in ("e", "f") and args.device == "cpu" else "peak"]["flops_per_s"]
            r["mfu"] = mfu(r["requests_per_s"] * compute["flops_per_request"], 1.0, peak)
    return {
        "machine": dict(machine(), load_average_1min=load),
        "compute": compute,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "inputs": source,
        "scenarios": scenarios,
        "ratios": ratios,
        # issue 11: ">= 3x the default (float32) of the day it was filed": a/f with that release as
        # the baseline; a/e (this checkout in float32) is reported alongside, without a target
        "targets": {"b/a": 0.95, own_schedule: 0.9, "b/c": 5, "a/f": 3, "mfu_b": 0.6},
        "notes": "(c) runs in-process with no HTTP (its best case); its latency is service time only. "
                 "(d) latencies are per batch. Mean batch size of (a)/(b) from the server's /metrics. "
                 "'rounds' lists each round's requests/s.",
    }


def start_baseline(args, artifacts: list[Artifact], tmp: Path) -> Server | None:
    """(f): the --baseline-spp install's server, with its defaults, on a registry of its own."""
    if not args.baseline_spp:
        return None
    files = [save_artifact(art, tmp / "baseline" / f"task{i}.safetensors") for i, art in enumerate(artifacts)]
    publish_with([args.baseline_spp], files, tmp / "baseline-registry")
    return Server(args, tmp / "baseline-registry", tmp / "baseline.log", spp=[args.baseline_spp])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    inputs, source = load_inputs(args.rte_dir, args.seed)
    backbone = load_backbone(args.backbone, tokenizer=args.tokenizer, device=args.device, dtype="float32")
    artifacts = make_artifacts(backbone, args.tasks, args.n_tokens, args.seed)
    labels = LabelSet.build(backbone, RTE.label_words)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="spp-bench-serve-") as tmp:
        from spp.registry import Registry

        registry = Registry(Path(tmp) / "registry")
        for i, art in enumerate(artifacts):
            registry.publish(art, name=f"task{i}")
        log_path = args.server_log or Path(tmp) / "server.log"
        server = Server(args, Path(tmp) / "registry", log_path, args.dtype, args.server_args.split())
        server32 = None if args.no_float32 else Server(args, Path(tmp) / "registry", Path(tmp) / "f32.log", "float32")
        baseline = start_baseline(args, artifacts, Path(tmp))
        bare_scorer = None
        try:
            server.wait_ready()
            health = server.health()  # the dtype the server chose: the in-process baselines use it too
            backbone.model.to(getattr(torch, health["dtype"]))
            backbone.dtype_reason = health["dtype_reason"]
            args.peft_dtype = health["dtype"]  # (c) in the server's dtype too
            for other in (server32, baseline):
                if other:
                    other.wait_ready()
            # The GEMM peaks are measured once both servers are up and idle: measured while the
            # float32 server was still loading, the peak came out at half (213 vs 392 GFLOP/s).
            compute = {"server_health": health, "flops_per_request": request_flops(backbone, labels, inputs, args.n_tokens),
                       **peaks(backbone)}
            bare_scorer = BareScorer.like(backbone, health)
            parts, bare = run_rounds(args, server, bare_scorer, labels, artifacts, inputs, server32, baseline)
            compute.update(peaks(backbone, compute))  # again, servers idle: the higher of the two
        finally:
            if bare_scorer is not None:
                bare_scorer.close()
            for other in (server32, baseline):
                if other:
                    other.stop()
            code = server.stop()
            load.append(os.getloadavg()[0])
        if code != 0:
            print(log_path.read_text()[-3000:], file=sys.stderr)
    results = summarize(args, parts, bare, load, source, compute)
    results["server_exit_code"] = code
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return results


if __name__ == "__main__":
    entry(main)
