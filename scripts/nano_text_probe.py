"""Linear probe of a plantain-nano text encoder: how well the background colours and the object
count can be read off its end-of-text state (what the UNet's text pooling sees).

    cargo run --release -p plantain-world --example dump_captions -- 4000 > caps.jsonl
    python scripts/nano_text_probe.py MODEL_DIR caps.jsonl   # add `held` to dump_captions for held-out captions

Logistic regression on the first 3,000 captions, accuracy on the rest. Needs torch + transformers.
"""
import json
import sys

import torch
from transformers import CLIPTextModel, CLIPTokenizer

COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray"]


def background(row, part):
    b = row["scene"]["background"]
    return COLORS.index(b["solid"] if "solid" in b else b["split"][part])


def main():
    model, captions = sys.argv[1], sys.argv[2]
    tok = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(model, subfolder="text_encoder").float().eval()
    rows = [json.loads(line) for line in open(captions)]
    train = len(rows) * 3 // 4
    targets = {
        "sky colour": torch.tensor([background(r, "sky") for r in rows]),
        "ground colour": torch.tensor([background(r, "ground") for r in rows]),
        "object count": torch.tensor([len(r["scene"]["objects"]) - 1 for r in rows]),
    }
    states = []
    with torch.no_grad():
        for i in range(0, len(rows), 200):
            enc = tok([r["caption"] for r in rows[i:i + 200]], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            states.append(te(enc.input_ids).pooler_output)
    x = torch.cat(states)
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    torch.manual_seed(0)
    for name, y in targets.items():
        classes = int(y.max()) + 1
        w = torch.zeros(x.shape[1], classes, requires_grad=True)
        b = torch.zeros(classes, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x[:train] @ w + b, y[:train]) + 1e-4 * (w ** 2).sum()
            loss.backward()
            opt.step()
        acc = ((x[train:] @ w + b).argmax(1) == y[train:]).float().mean().item()
        print(f"{name:14s} {100 * acc:5.1f}% of {len(rows) - train} test captions")


if __name__ == "__main__":
    main()
