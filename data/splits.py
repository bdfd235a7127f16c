"""Deterministic, seeded selections of items: class subsets, train/val splits, per-class limits.

Each class draws from its own generator seeded by (seed, class, purpose), so choosing a class subset
or adding classes never changes which images of the other classes land in train or val.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from priorswap.toolkit.errors import PriorswapError

_SPLIT, _LIMIT = 0, 1


def _by_class(labels: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    return groups


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val), both sorted; each class with >= 2 items gives round(n * fraction) >= 1 to val."""
    if not 0.0 <= val_fraction < 1.0:
        raise PriorswapError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train: list[int] = []
    val: list[int] = []
    for label, indices in _by_class(labels).items():
        order = np.random.default_rng([seed, label, _SPLIT]).permutation(len(indices))
        n_val = round(len(indices) * val_fraction)
        if val_fraction > 0 and len(indices) >= 2:
            n_val = min(max(n_val, 1), len(indices) - 1)
        val += [indices[i] for i in order[:n_val]]
        train += [indices[i] for i in order[n_val:]]
    return sorted(train), sorted(val)


def limit_per_class(labels: Sequence[int], limit: int, seed: int) -> list[int]:
    """Sorted indices keeping at most `limit` seeded-random items of each class (limited-data fine-tuning)."""
    if limit < 1:
        raise PriorswapError(f"limit_per_class must be >= 1 or null, got {limit}")
    keep: list[int] = []
    for label, indices in _by_class(labels).items():
        order = np.random.default_rng([seed, label, _LIMIT]).permutation(len(indices))
        keep += [indices[i] for i in order[:limit]]
    return sorted(keep)


def check_class_ids(classes: Sequence[int] | None, class_names: Sequence[str], dataset: str) -> None:
    """One line for a class subset that names ids the dataset does not have (or one twice), before anything loads."""
    if not classes:
        return
    n = len(class_names)
    bad = [c for c in classes if not 0 <= c < n]
    if bad:
        raise PriorswapError(
            f"data.init_args.classes {list(classes)}: {dataset} has {n} classes, ids 0..{n - 1}; "
            f"{', '.join(map(str, bad))} {'is' if len(bad) == 1 else 'are'} out of range"
        )
    if len(set(classes)) != len(classes):
        raise PriorswapError(f"data.init_args.classes {list(classes)} names a class twice; give each id once")


def select_classes(labels: Sequence[int], classes: Sequence[int], num_classes: int) -> tuple[list[int], list[int]]:
    """Keep items whose label is in `classes` and relabel them 0..k-1 in the order given.

    Returns (kept indices, new labels). E.g. classes=[5, 7, 8, 9] maps 5->0, 7->1, 8->2, 9->3.
    """
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or len(set(classes)) != len(classes) or not classes:
        raise PriorswapError(f"classes must be distinct ids in [0, {num_classes}), got {list(classes)}")
    new_label = {old: new for new, old in enumerate(classes)}
    kept = [i for i, label in enumerate(labels) if label in new_label]
    return kept, [new_label[labels[i]] for i in kept]
