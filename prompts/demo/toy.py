"""An offline world for demos and tests: a tiny T5 that knows two synthetic tasks, and their data.

A frozen *random* T5 gives prompt tuning almost nothing to steer, so the tiny backbone is first
trained briefly (all weights) as a multi-task model that reads an instruction prefix:
``"sentiment: great movie" -> "positive"``, ``"topic: great movie" -> "culture"``. It is then
saved as a normal local model directory (weights + ByT5 byte tokenizer, which needs no vocab
file) and frozen. Unprefixed inputs were shown with random labels, so an untrained prompt
scores at chance. A prompt trained on the task data WITHOUT the prefix must learn to play the
instruction's part: chance accuracy at step 0, high accuracy once trained. This mirrors real
prompt tuning on a pretrained T5, at a size that trains in seconds on a CPU.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import torch

POSITIVE = ["good", "great", "fine", "nice", "superb", "lovely", "happy", "bright"]
NEGATIVE = ["bad", "awful", "poor", "sad", "weak", "dull", "ugly", "grim"]
CULTURE = ["movie", "film", "song", "show", "book", "poem", "play", "album"]
NATURE = ["river", "forest", "storm", "tree", "lake", "hill", "cloud", "field"]
TASKS = {
    "sentiment": {"words": ("negative", "positive"), "field": "review"},
    "topic": {"words": ("nature", "culture"), "field": "review"},
}


def make_example(rng: random.Random) -> tuple[str, int, int]:
    """A two-word review with an independent sentiment label and topic label."""
    s, t = rng.randint(0, 1), rng.randint(0, 1)
    adj = rng.choice(POSITIVE if s else NEGATIVE)
    noun = rng.choice(CULTURE if t else NATURE)
    return f"{adj} {noun}", s, t


def tiny_config(vocab_size: int, d_model: int = 64, layers: int = 2):
    """A T5 v1.1-style config (gated-gelu, untied lm_head) at toy size."""
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_ff=2 * d_model,
        d_kv=d_model // 4,
        num_heads=4,
        num_layers=layers,
        num_decoder_layers=layers,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )


def make_tiny_backbone_dir(out: str | Path, *, steps: int = 400, seed: int = 0, d_model: int = 64) -> Path:
    """Build, briefly pretrain on the instruction-prefixed tasks, and save model + tokenizer."""
    from transformers import ByT5Tokenizer, T5ForConditionalGeneration

    from spp.prompts.backbone import untie_lm_head

    out = Path(out)
    tok = ByT5Tokenizer()
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(tiny_config(len(tok), d_model=d_model))
    untie_lm_head(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        texts, targets = [], []
        for _ in range(32):
            text, s, t = make_example(rng)
            name = rng.choice([*TASKS, None])
            if name is None:
                # Without an instruction the answer is noise: an untrained prompt scores at chance.
                texts.append(text)
                targets.append(rng.choice([w for spec in TASKS.values() for w in spec["words"]]))
                continue
            texts.append(f"{name}: {text}")
            targets.append(TASKS[name]["words"][s if name == "sentiment" else t])
        enc = tok(texts, padding=True, return_tensors="pt")
        labels = tok(targets, padding=True, return_tensors="pt").input_ids
        labels[labels == tok.pad_token_id] = -100
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_demo_task(data_dir: str | Path, name: str, *, n_train: int = 400, n_eval: int = 200, seed: int = 0) -> Path:
    """Write ``<data_dir>/<name>/{train,validation,test}.csv`` and ``task.json`` (a custom spec).

    The text has no instruction prefix: the prompt must supply it. Returns the spec path.
    """
    if name not in TASKS:
        raise ValueError(f"unknown demo task {name!r}; choose from {', '.join(TASKS)}")
    words, field = TASKS[name]["words"], TASKS[name]["field"]
    folder = Path(data_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{name}-{seed}")
    for split, n in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        with (folder / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([field, "label"])
            for _ in range(n):
                text, s, t = make_example(rng)
                writer.writerow([text, words[s if name == "sentiment" else t]])
    spec = {
        "name": name,
        "template": f"{{{field}}}",
        "label_column": "label",
        "label_words": list(words),
        "metrics": ["accuracy"],
        "file_format": "csv",
        "file_names": {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"},
        "description": f"synthetic {name} task of spp's offline demo",
    }
    path = folder / "task.json"
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path
