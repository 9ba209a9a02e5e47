"""Core benchmark: training step per method, spp vs HF PEFT prompt tuning, rank scoring vs generate,
scoring throughput by batch size, float32 vs bf16, the lean scorer vs full logits, and the unpadded
forwards vs transformers' padded ones (``--sections packed``). All ratios
are measured side by side in one run; every timing also reports MFU (spp.prompts.flops).

    python bench/core.py --tokenizer /work/shared/data/t5-tokenizer --rte /work/shared/data/rte
    python bench/core.py --device cuda ...      # bf16 on a GPU, MFU against its datasheet peak

Defaults: random:google/t5-small-lm-adapt (real architecture, random weights), CPU, --dtype auto,
batch 16 x 128 tokens. Writes bench/results/core.json (with the CPU model and its bf16 features)
and prints the tables.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from common import backbone_record, entry, machine, peak_for, sync

from spp.prompts.backbone import load_backbone, prepend_prompts
from spp.prompts.flops import mfu, scoring_flops, t5_forward_flops
from spp.prompts.hardware import autocast
from spp.prompts.methods import get_method, method_names
from spp.prompts.scoring import LabelSet, Scorer
from spp.prompts.train.trainer import _label_tensor, build_prompt_method, prompt_loss

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


SPREAD: dict = {}  # contender -> (min, max) seconds of its samples, for the JSON


def interleaved(fns: dict, repeats: int, warmup: int = 1, device: str = "cpu") -> dict[str, float]:
    """Median seconds of each callable, timed round-robin so that a change in machine load
    during the run hits every contender alike (the ratios are what the benchmark reports)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - t0)
    SPREAD.update({str(k): (min(v), max(v)) for k, v in samples.items()})
    return {k: statistics.median(v) for k, v in samples.items()}


def spp_train_step(backbone, method: str, ids, mask, labels):
    m = build_prompt_method(backbone, method, {}, WORDS, seed=0)
    opt = torch.optim.AdamW(m.param_groups(0.01), lr=get_method(method).default_lr)
    embed = backbone.model.get_input_embeddings()

    def step() -> None:
        inputs, full = prepend_prompts(embed(ids), mask, m())
        with autocast(ids.device, backbone.dtype):  # as the trainer does
            loss = backbone.model(inputs_embeds=inputs, attention_mask=full, labels=labels, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def peft_train_step(backbone, ids, mask, labels, n_tokens: int = 10):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    config = PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=n_tokens, num_transformer_submodules=1)
    model = get_peft_model(backbone.model, config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)

    def step() -> None:
        with autocast(ids.device, backbone.dtype):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
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
    targets = torch.full((k, width), -100, device=ids.device)
    for i, t in enumerate(labels.token_ids):
        targets[i, : len(t)] = torch.tensor(t, device=ids.device)
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
    ap.add_argument("--backbone", default="random:google/t5-small-lm-adapt")
    ap.add_argument("--tokenizer", default=None, help="needed for random: builds offline (a T5 tokenizer dir)")
    ap.add_argument("--rte", type=Path, default=None, help="GLUE RTE folder for real input lengths")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 where it is native and faster), float32, bfloat16")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--texts", type=int, default=64, help="RTE texts scored per repeat in the precision section")
    ap.add_argument("--sections", default="precision,lean,train,scoring", help="which sections to run, comma-separated")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "core.json")
    args = ap.parse_args()
    sections = {"precision": precision_section, "lean": lean_section, "train": train_section,
                "scoring": scoring_section, "packed": packed_section}
    torch.manual_seed(0)
    bb = load_backbone(args.backbone, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype)
    texts = rte_texts(args.rte, max(64, args.texts))
    results: dict = {"machine": machine(), "backbone": backbone_record(bb), "batch": [args.batch_size, args.length],
                     "peak": {str(bb.dtype): peak_for(bb)}}
    print(f"{args.backbone} in {results['backbone']['dtype']} ({bb.dtype_reason})", flush=True)
    for name in args.sections.split(","):
        results.update(sections[name](bb, texts, args, results["peak"]))
    results["spread_s"] = {k: list(v) for k, v in SPREAD.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)


def train_section(bb, texts: list[str], args, peaks: dict) -> dict:
    """One training step per method and HF PEFT's, in the backbone's dtype (autocast in bf16)."""
    ids, mask = [t.to(bb.device) for t in fixed_length_batch(bb, texts[: args.batch_size], args.length)]
    labels = _label_tensor(bb, WORDS, [i % 2 for i in range(args.batch_size)]).to(bb.device)
    steps = {name: spp_train_step(bb, name, ids, mask, labels) for name in method_names() if name != "attempt"}
    steps["peft"], _ = peft_train_step(bb, ids, mask, labels)  # wraps, does not modify, bb.model
    times = interleaved(steps, args.repeats, device=args.device)
    out: dict = {"peft_train_step_s": times.pop("peft"), "train_step_s": times}
    flops = 2 * args.batch_size * t5_forward_flops(bb.model.config, 10 + args.length, labels.shape[1])
    out["train_mfu"] = {k: mfu(flops, t, peaks[str(bb.dtype)]["flops_per_s"]) for k, t in times.items()}
    simple = times["simple"]
    out["train_ratios"] = {f"{k}/simple": v / simple for k, v in times.items()}
    out["train_ratios"]["simple/peft"] = simple / out["peft_train_step_s"]
    return out


def packed_section(bb, texts: list[str], args, peaks: dict) -> dict:
    """Unpadded (spp.prompts.packed) vs transformers' padded forwards on RTE texts in arrival
    order (batches of --batch-size, as a training step or a server batch sees them): scoring and
    a training step (forward + backward of the loss the trainer uses), interleaved."""
    batches = [texts[a : a + args.batch_size] for a in range(0, len(texts) - args.batch_size + 1, args.batch_size)]
    labels = LabelSet.build(bb, WORDS)
    gold = _label_tensor(bb, WORDS, [i % 2 for i in range(args.batch_size)]).to(bb.device)
    prompt = torch.nn.Parameter(torch.randn(10, bb.d_model, device=bb.device) * 0.5)
    scorers = {"padded": Scorer(bb, packed=False), "packed": Scorer(bb, packed=True)}

    def score(name: str):
        with torch.no_grad():
            for batch in batches:
                scorers[name].score(batch, prompt.detach(), labels)

    def train(name: str):  # the trainer's own loss on each scorer's forwards
        for batch in batches:
            prompt_loss(scorers[name], lambda: prompt, batch, gold).backward()
            prompt.grad = None

    fns = {(kind, name): (lambda k=kind, n=name: (score if k == "score" else train)(n))
           for kind in ("score", "train") for name in scorers}
    t = interleaved(fns, args.repeats, device=args.device)
    rows = len(batches) * args.batch_size
    out = {f"{kind}_{name}_rows_per_s": rows / t[(kind, name)] for kind, name in fns}
    out["score packed/padded"] = t[("score", "padded")] / t[("score", "packed")]
    out["train packed/padded"] = t[("train", "padded")] / t[("train", "packed")]
    print(f"unpadded vs padded, {rows} RTE rows in batches of {args.batch_size}: scoring "
          f"{out['score packed/padded']:.2f}x, training step {out['train packed/padded']:.2f}x", flush=True)
    return {"packed": out}


def sorted_batches(bb, texts: list[str], batch_size: int):
    """Length-sorted batches of tokenized texts (as score_texts makes them) and their FLOPs."""
    order = sorted(texts, key=len)
    out = []
    for a in range(0, len(order), batch_size):
        enc = bb.tokenizer(order[a : a + batch_size], padding=True, truncation=True, return_tensors="pt")
        out.append((enc["input_ids"].to(bb.device), enc["attention_mask"].to(bb.device)))
    return out


def batch_flops(bb, batches, n_prompt: int, labels: LabelSet) -> float:
    return sum(scoring_flops(bb.model.config, n_prompt + int(n), labels.token_ids)
               for _, m in batches for n in m.sum(1).tolist())


def precision_section(bb, texts: list[str], args, peaks: dict) -> dict:
    """Scoring (RTE texts, length-sorted batches of 32) and a training step in float32 and in
    bfloat16, interleaved, each with its MFU against its own dtype's GEMM peak."""
    other = torch.float32 if bb.dtype == torch.bfloat16 else torch.bfloat16
    twin = dataclasses.replace(bb, model=copy.deepcopy(bb.model).to(other))
    peaks[str(other)] = peak_for(twin)
    by_dtype = {str(b.dtype).removeprefix("torch."): b for b in (bb, twin)}
    labels = LabelSet.build(bb, WORDS)
    prompt = torch.randn(10, bb.d_model) * 0.5
    batches = sorted_batches(bb, texts[: args.texts], 32)
    flops = batch_flops(bb, batches, 10, labels)
    ids, mask = [t.to(bb.device) for t in fixed_length_batch(bb, texts[: args.batch_size], args.length)]
    tl = _label_tensor(bb, WORDS, [i % 2 for i in range(args.batch_size)]).to(bb.device)
    fns = {}
    for name, b in by_dtype.items():
        scorer = Scorer(b)
        fns[("score", name)] = lambda s=scorer: [s.candidate_loglik(s.encode(i, m, prompt), [labels] * len(i))
                                                 for i, m in batches]
        fns[("train", name)] = spp_train_step(b, "simple", ids, mask, tl)
    with torch.no_grad():
        t = interleaved({k: f for k, f in fns.items() if k[0] == "score"}, max(3, args.repeats // 2), device=args.device)
    t.update(interleaved({k: f for k, f in fns.items() if k[0] == "train"}, args.repeats, device=args.device))
    train_flops = 2 * args.batch_size * t5_forward_flops(bb.model.config, 10 + args.length, tl.shape[1])
    out = {}
    for name, b in by_dtype.items():
        peak = peaks[str(b.dtype)]["flops_per_s"]
        out[name] = {"score_ex_per_s": args.texts / t[("score", name)], "score_mfu": mfu(flops, t[("score", name)], peak),
                     "train_step_s": t[("train", name)], "train_mfu": mfu(train_flops, t[("train", name)], peak)}
        print(f"{name}: scoring {out[name]['score_ex_per_s']:.1f} ex/s (MFU {100 * out[name]['score_mfu']:.1f}%), "
              f"train step {t[('train', name)]:.3f} s", flush=True)
    out["bf16/float32"] = {"scoring": out["bfloat16"]["score_ex_per_s"] / out["float32"]["score_ex_per_s"],
                           "train": out["float32"]["train_step_s"] / out["bfloat16"]["train_step_s"]}
    return {"precision": out}


def full_logits_loglik(scorer: Scorer, states, enc_mask, label_sets):
    """The scorer before the lean path: logits and logsumexp at every decoder position."""
    from spp.prompts.scoring import _pack_candidates

    packed = _pack_candidates(label_sets, scorer.backbone, states.device, {})
    from spp.prompts.packed import additive_mask

    bias = additive_mask(packed.allowed, states.dtype).unsqueeze(1)  # (B, 1, D, D)
    logits = scorer.backbone.model(encoder_outputs=(states,), attention_mask=enc_mask, decoder_input_ids=packed.inputs,
                                   decoder_attention_mask=bias, use_cache=False).logits
    target = logits.gather(-1, packed.targets.unsqueeze(-1)).squeeze(-1).float()
    return (target - torch.logsumexp(logits.float(), dim=-1)) * packed.valid


def lean_section(bb, texts: list[str], args, peaks: dict) -> dict:
    """The decoder + head of one batch of 32: lean (real positions only) vs full logits, with a
    single task (little decoder padding) and mixed label sets (a 2-way and a 3-way task)."""
    scorer = Scorer(bb)
    two, three = LabelSet.build(bb, WORDS), LabelSet.build(bb, ("entailment", "neutral", "contradiction"))
    batch = sorted_batches(bb, texts[:32], 32)[0]
    out = {}
    with torch.no_grad():
        encoded = scorer.encode(*batch, torch.randn(10, bb.d_model) * 0.5)
        for name, sets in (("single", [two] * 32), ("mixed", [two, three] * 16)):
            t = interleaved({"lean": lambda s=sets: scorer.candidate_loglik(encoded, s),
                             "full": lambda s=sets: full_logits_loglik(scorer, encoded.padded(), encoded.mask, s)},
                            args.repeats, device=args.device)
            out[name] = {"lean_s": t["lean"], "full_logits_s": t["full"], "full/lean": t["full"] / t["lean"]}
            print(f"decoder+head, {name} labels: lean {t['lean']:.3f} s, full logits {t['full']:.3f} s", flush=True)
    return {"lean_scorer": out}


def scoring_section(bb, texts: list[str], args, peaks: dict) -> dict:
    scorer = Scorer(bb)
    labels = LabelSet.build(bb, WORDS)
    prompt = torch.randn(10, bb.d_model) * 0.5
    ids, mask = [t.to(bb.device) for t in fixed_length_batch(bb, texts[: args.batch_size], args.length)]
    out: dict = {}
    per_ex = scoring_flops(bb.model.config, 10 + args.length, labels.token_ids)
    with torch.no_grad():
        embeds = bb.model.get_input_embeddings()(ids)
        inputs, full = prepend_prompts(embeds, mask, prompt.to(bb.device))
        limit = max(len(t) for t in labels.token_ids)
        t = interleaved({
            "rank": lambda: scorer.candidate_loglik(scorer.encode(ids, mask, prompt), [labels] * len(ids)),
            "generate": lambda: bb.model.generate(inputs_embeds=inputs, attention_mask=full, max_new_tokens=limit,
                                                  do_sample=False),
        }, args.repeats, device=args.device)
        out["rank_s"], out["generate_s"] = t["rank"], t["generate"]
        out["rank/generate"] = t["rank"] / t["generate"]
        print(f"rank scoring {out['rank_s']:.3f} s, generate {out['generate_s']:.3f} s", flush=True)
        out["throughput"] = {}
        fns = {}
        for bs in (8, 16, 32, 64):
            b_ids, b_mask = [x.to(bb.device) for x in fixed_length_batch(bb, texts[:bs], args.length)]
            fns[("spp", bs)] = lambda i=b_ids, m=b_mask, n=bs: scorer.candidate_loglik(scorer.encode(i, m, prompt), [labels] * n)
            fns[("plain", bs)] = lambda i=b_ids, m=b_mask: plain_scoring(bb, i, m, prompt.to(bb.device), labels)
        t = interleaved(fns, 3, device=args.device)
        for bs in (8, 16, 32, 64):
            ours, plain = t[("spp", bs)], t[("plain", bs)]
            out["throughput"][bs] = {"spp_ex_per_s": bs / ours, "plain_ex_per_s": bs / plain,
                                     "spp_mfu": mfu(bs * per_ex, ours, peaks[str(bb.dtype)]["flops_per_s"])}
            print(f"batch {bs:>2}: spp {bs / ours:6.1f} ex/s, plain {bs / plain:6.1f} ex/s", flush=True)
    return out


def print_tables(r: dict) -> None:
    m, b = r["machine"], r["backbone"]
    print(f"\n{b['name']} in {b['dtype']} on {m['cpu']} ({', '.join(m['cpu_bf16_flags']) or 'no native bf16'}), "
          f"{m['gpu'] or 'no GPU'}, batch {r['batch'][0]} x {r['batch'][1]} tokens")
    if "precision" in r:
        print_precision(r)
    for name, v in r.get("lean_scorer", {}).items():
        print(f"decoder + head ({name} label sets): full logits / lean = {v['full/lean']:.2f}x")
    if "train_step_s" in r:
        print("| method | train step (s) | vs simple | MFU |\n|---|---|---|---|")
        for k, v in r["train_step_s"].items():
            print(f"| {k} | {v:.3f} | {r['train_ratios'][k + '/simple']:.2f}x | {100 * r['train_mfu'][k]:.1f}% |")
        print(f"| HF PEFT prompt tuning | {r['peft_train_step_s']:.3f} | spp simple / PEFT = "
              f"{r['train_ratios']['simple/peft']:.2f}x | |")
    if "throughput" in r:
        print(f"\nrank scoring {r['rank_s']:.3f} s vs generate {r['generate_s']:.3f} s: {r['rank/generate']:.2f}x")
        print("| batch | spp ex/s | spp MFU | plain ex/s |\n|---|---|---|---|")
        for bs, v in r["throughput"].items():
            print(f"| {bs} | {v['spp_ex_per_s']:.1f} | {100 * v['spp_mfu']:.1f}% | {v['plain_ex_per_s']:.1f} |")


def print_precision(r: dict) -> None:
    print("| dtype | scoring ex/s | scoring MFU | train step (s) | train MFU |\n|---|---|---|---|---|")
    for name in ("float32", "bfloat16"):
        p = r["precision"][name]
        print(f"| {name} | {p['score_ex_per_s']:.1f} | {100 * p['score_mfu']:.1f}% | {p['train_step_s']:.3f} | "
              f"{100 * p['train_mfu']:.1f}% |")
    print(f"bf16 / float32: scoring {r['precision']['bf16/float32']['scoring']:.2f}x, "
          f"training {r['precision']['bf16/float32']['train']:.2f}x")


if __name__ == "__main__":
    entry(main)
