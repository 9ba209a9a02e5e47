"""Core benchmark: training step per method, spp vs HF PEFT prompt tuning, rank scoring vs generate,
and scoring throughput by batch size. All ratios are measured side by side in one run.

    python bench/core.py --tokenizer ../shared/data/t5-tokenizer --rte ../shared/data/rte

Defaults: random:t5-small (real architecture, random weights), CPU, batch 16 x 128 tokens.
Writes bench/results/core.json and prints the tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from spp.prompts.backbone import load_backbone, prepend_prompts
from spp.prompts.methods import get_method, method_names
from spp.prompts.scoring import LabelSet, Scorer
from spp.prompts.train.trainer import _label_tensor, build_prompt_method

WORDS = ("entailment", "not_entailment")


def rte_texts(rte_dir: Path | None, n: int) -> list[str]:
    """RTE-length inputs: the real dev set when given, else a synthetic passage of similar length."""
    if rte_dir and (rte_dir / "dev.tsv").is_file():
        with (rte_dir / "dev.tsv").open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
        texts = [f"rte sentence1: {r['sentence1']} sentence2: {r['sentence2']}" for r in rows]
    else:
        texts = [f"rte sentence1: {'the committee said the plan would go ahead next year ' * 6} sentence2: it did {i}" for i in range(n)]
    return (texts * (n // len(texts) + 1))[:n]


def fixed_length_batch(backbone, texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly ``length`` tokens per row (long texts truncated, short ones repeated)."""
    long = [(t + " ") * 8 for t in texts]
    enc = backbone.tokenizer(long, truncation=True, max_length=length, padding="max_length", return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def timed(fn, repeats: int, warmup: int = 2) -> float:
    return interleaved({"x": fn}, repeats, warmup)["x"]


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, timed round-robin so that a change in machine load
    during the run hits every contender alike (the ratios are what the benchmark reports)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def spp_train_step(backbone, method: str, ids, mask, labels):
    m = build_prompt_method(backbone, method, {}, WORDS, seed=0)
    opt = torch.optim.AdamW(m.param_groups(0.01), lr=get_method(method).default_lr)
    embed = backbone.model.get_input_embeddings()

    def step() -> None:
        inputs, full = prepend_prompts(embed(ids), mask, m())
        backbone.model(inputs_embeds=inputs, attention_mask=full, labels=labels, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def peft_train_step(backbone, ids, mask, labels, n_tokens: int = 10):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    config = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=n_tokens, num_transformer_submodules=1)
    model = get_peft_model(backbone.model, config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)

    def step() -> None:
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model


def plain_scoring(backbone, ids, mask, prompt, labels: LabelSet) -> None:
    """The obvious implementation: encoder states copied per candidate, full log-softmax."""
    model = backbone.model
    embeds = model.get_input_embeddings()(ids)
    inputs, full = prepend_prompts(embeds, mask, prompt)
    states = model.get_encoder()(inputs_embeds=inputs, attention_mask=full).last_hidden_state
    k = len(labels.token_ids)
    width = max(len(t) for t in labels.token_ids)
    targets = torch.full((k, width), -100)
    for i, t in enumerate(labels.token_ids):
        targets[i, : len(t)] = torch.tensor(t)
    B = ids.shape[0]
    rep_states = states.repeat_interleave(k, 0)
    rep_mask = full.repeat_interleave(k, 0)
    rep_targets = targets.repeat(B, 1)
    logits = model(encoder_outputs=(rep_states,), attention_mask=rep_mask, labels=rep_targets).logits
    lp = torch.log_softmax(logits, -1)
    tok = lp.gather(-1, rep_targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (rep_targets >= 0)
    tok.sum(-1).view(B, k).argmax(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="random:t5-small")
    ap.add_argument("--tokenizer", default=None, help="needed for random: builds offline (a T5 tokenizer dir)")
    ap.add_argument("--rte", type=Path, default=None, help="GLUE RTE folder for real input lengths")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "core.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    bb = load_backbone(args.backbone, tokenizer=args.tokenizer, device="cpu")
    texts = rte_texts(args.rte, 64)
    ids, mask = fixed_length_batch(bb, texts[: args.batch_size], args.length)
    labels = _label_tensor(bb, WORDS, [i % 2 for i in range(args.batch_size)])
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                     "load_average_at_start": os.getloadavg()[0], "backbone": args.backbone,
                     "batch": [args.batch_size, args.length]}
    steps = {name: spp_train_step(bb, name, ids, mask, labels) for name in method_names() if name != "attempt"}
    steps["peft"], _ = peft_train_step(bb, ids, mask, labels)  # wraps, does not modify, bb.model
    times = interleaved(steps, args.repeats)
    results["peft_train_step_s"] = times.pop("peft")
    results["train_step_s"] = times
    for name, t in times.items():
        print(f"train step {name:<9} {t:.3f} s", flush=True)
    print(f"train step peft      {results['peft_train_step_s']:.3f} s", flush=True)
    results.update(scoring_section(bb, texts, args))
    simple = results["train_step_s"]["simple"]
    results["ratios"] = {f"{k}/simple": v / simple for k, v in results["train_step_s"].items()}
    results["ratios"]["simple/peft"] = simple / results["peft_train_step_s"]
    results["ratios"]["rank/generate"] = results["rank_s"] / results["generate_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)


def scoring_section(bb, texts: list[str], args) -> dict:
    scorer = Scorer(bb)
    labels = LabelSet.build(bb, WORDS)
    prompt = torch.randn(10, bb.d_model) * 0.5
    ids, mask = fixed_length_batch(bb, texts[: args.batch_size], args.length)
    out: dict = {}
    with torch.no_grad():
        embeds = bb.model.get_input_embeddings()(ids)
        inputs, full = prepend_prompts(embeds, mask, prompt)
        limit = max(len(t) for t in labels.token_ids)
        t = interleaved({
            "rank": lambda: scorer.candidate_loglik(*scorer.encode(ids, mask, prompt), [labels] * len(ids)),
            "generate": lambda: bb.model.generate(inputs_embeds=inputs, attention_mask=full, max_new_tokens=limit,
                                                  do_sample=False),
        }, args.repeats)
        out["rank_s"], out["generate_s"] = t["rank"], t["generate"]
        print(f"rank scoring {out['rank_s']:.3f} s, generate {out['generate_s']:.3f} s", flush=True)
        out["throughput"] = {}
        fns = {}
        for bs in (8, 16, 32, 64):
            b_ids, b_mask = fixed_length_batch(bb, texts[:bs], args.length)
            fns[("spp", bs)] = lambda i=b_ids, m=b_mask, n=bs: scorer.candidate_loglik(*scorer.encode(i, m, prompt), [labels] * n)
            fns[("plain", bs)] = lambda i=b_ids, m=b_mask: plain_scoring(bb, i, m, prompt, labels)
        t = interleaved(fns, 3)
        for bs in (8, 16, 32, 64):
            ours, plain = t[("spp", bs)], t[("plain", bs)]
            out["throughput"][bs] = {"spp_ex_per_s": bs / ours, "plain_ex_per_s": bs / plain}
            print(f"batch {bs:>2}: spp {bs / ours:6.1f} ex/s, plain {bs / plain:6.1f} ex/s", flush=True)
    return out


def print_tables(r: dict) -> None:
    print(f"\n{r['backbone']} on {r['machine']}, batch {r['batch'][0]} x {r['batch'][1]} tokens")
    print("| method | train step (s) | vs simple |\n|---|---|---|")
    for k, v in r["train_step_s"].items():
        print(f"| {k} | {v:.3f} | {r['ratios'][k + '/simple']:.2f}x |")
    print(f"| HF PEFT prompt tuning | {r['peft_train_step_s']:.3f} | spp simple / PEFT = {r['ratios']['simple/peft']:.2f}x |")
    print(f"\nrank scoring {r['rank_s']:.3f} s vs generate {r['generate_s']:.3f} s: {r['ratios']['rank/generate']:.2f}x")
    print("| batch | spp ex/s | plain ex/s |\n|---|---|---|")
    for bs, v in r["throughput"].items():
        print(f"| {bs} | {v['spp_ex_per_s']:.1f} | {v['plain_ex_per_s']:.1f} |")
    best = max(v["spp_ex_per_s"] for v in r["throughput"].values())
    worst_drop = 1 - min(v["spp_ex_per_s"] for v in r["throughput"].values()) / best
    print(f"largest drop from the best batch size: {100 * worst_drop:.1f}%")


if __name__ == "__main__":
    main()
