"""The prompts a text-to-image evaluation samples, from the file formats prompt sets come in.

- COCO captions JSON (``captions_val2014.json``): ``annotations[].caption``, in file order;
- ``.jsonl``: one object per line with a ``prompt`` (or ``text``, or ``caption``) field;
- ``.csv``: a ``prompt`` (or ``caption``, or ``text``) column;
- anything else: plain text, one prompt per line (blank lines skipped).

Prompt i gets the id ``p<i>`` (zero-padded), so its samples are ``p0007_0.png``; a run records a digest of the
prompts, so a resumed run reuses samples only for the same prompts in the same order.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

from ..errors import PriorswapError

JSONL_FIELDS = ("prompt", "text", "caption")
CSV_COLUMNS = ("prompt", "caption", "text")


@dataclass(frozen=True)
class Prompt:
    id: str  # file-name safe: samples are <id>_<k>.png
    text: str


def _coco(data, path: str) -> list[str]:
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise PriorswapError(f"--prompts {path!r} is JSON without an 'annotations' list (COCO captions format)")
    texts = []
    for i, a in enumerate(annotations):
        caption = a.get("caption") if isinstance(a, dict) else None
        if not isinstance(caption, str):
            raise PriorswapError(f"--prompts {path!r}: annotation {i} has no 'caption' string")
        texts.append(caption)
    return texts


def _jsonl(f, path: str) -> list[str]:
    texts = []
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise PriorswapError(f"--prompts {path!r} line {n} is not JSON") from None
        field = next((k for k in JSONL_FIELDS if isinstance(row, dict) and isinstance(row.get(k), str)), None)
        if field is None:
            raise PriorswapError(f"--prompts {path!r} line {n} has no {'/'.join(JSONL_FIELDS)} string field")
        texts.append(row[field])
    return texts


def _csv(f, path: str) -> list[str]:
    reader = csv.DictReader(f)
    names = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    column = next((names[c] for c in CSV_COLUMNS if c in names), None)
    if column is None:
        raise PriorswapError(f"--prompts {path!r} has no {'/'.join(CSV_COLUMNS)} column")
    return [row[column] or "" for row in reader]


def read_prompts(path: str, flag: str = "--prompts") -> list[Prompt]:
    """Every non-empty prompt of ``path``, or a one-line error (missing, unreadable, malformed or empty file)."""
    full = os.path.expanduser(path)
    ext = os.path.splitext(full)[1].lower()
    try:
        with open(full, encoding="utf-8", newline="" if ext == ".csv" else None) as f:
            if ext == ".json":
                try:
                    data = json.load(f)
                except ValueError:
                    raise PriorswapError(f"{flag} {path!r} is not valid JSON") from None
                texts = _coco(data, path)
            elif ext == ".jsonl":
                texts = _jsonl(f, path)
            elif ext == ".csv":
                texts = _csv(f, path)
            else:
                texts = list(f)
    except OSError as e:
        raise PriorswapError(f"{flag} {path!r} cannot be read ({e.strerror or type(e).__name__})") from None
    except UnicodeDecodeError:
        raise PriorswapError(f"{flag} {path!r} is not UTF-8 text") from None
    texts = [t.strip() for t in texts if t.strip()]  # as `sample t2i --prompt-file` reads them
    if not texts:
        raise PriorswapError(f"{flag} {path!r} holds no prompt")
    width = len(str(len(texts) - 1))
    return [Prompt(f"p{i:0{width}d}", t) for i, t in enumerate(texts)]
