"""A domain shift made from Multi30k alone, for measuring fine-tuning (`train --init-from`).

    python scripts/domain_split.py --out /tmp/domains      # reads $TRANSLATOR_DATA_DIR

Every split (train, val, test_2016_flickr) is cut in two by topic: pairs whose English mentions
a dog, a ball, a bike or a ball game form the `topic` domain, the rest the `general` domain. Writes
OUT/{general,topic}/{train,val,test}.{en,de} as plain text, one sentence per line, and prints
the pair counts as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
from pathlib import Path

TOPIC = re.compile(
    r"\b(dogs?|pupp(y|ies)|balls?|bikes?|bicycles?|bikers?|cyclists?|soccer|football|"
    r"basketball|baseball|volleyball|tennis|frisbee)\b",
    re.I,
)
SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    default = os.environ.get("TRANSLATOR_DATA_DIR", "../shared/data/multi30k")
    parser.add_argument("--data", type=Path, default=Path(default))
    args = parser.parse_args()
    counts: dict[str, dict[str, int]] = {"general": {}, "topic": {}}
    for name, stem in SPLITS.items():
        en, de = read(args.data / f"{stem}.en.gz"), read(args.data / f"{stem}.de.gz")
        parts = {"general": ([], []), "topic": ([], [])}
        for src, tgt in zip(en, de, strict=True):
            side = parts["topic" if TOPIC.search(src) else "general"]
            side[0].append(src)
            side[1].append(tgt)
        for domain, (src, tgt) in parts.items():
            folder = args.out / domain
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.en").write_text("".join(s + "\n" for s in src), encoding="utf-8")
            (folder / f"{name}.de").write_text("".join(s + "\n" for s in tgt), encoding="utf-8")
            counts[domain][name] = len(src)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
