"""What ``priorswap eval dit`` checks once the model is loaded, before any sampling: that a label classifier scores
the model's own classes, and how far the Fréchet reference can be trusted.

Label accuracy compares the classifier's argmax with the class each sample was asked for, so a classifier of other
classes (or of the same classes in another order) prints a number that means nothing. A Fréchet distance from fewer
reference images than feature dimensions uses a rank-deficient covariance; it is computed, but said so.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import PriorswapError


def _norm(name: str) -> str:
    return " ".join(str(name).replace("_", " ").lower().split())


def _shown(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def check_fmnist_classes(classes: list[int] | None, id2label: dict[int, str], num_classes: int, model: str) -> None:
    """``--classifier fmnist`` scores Fashion-MNIST's classes (``classes``, relabelled 0..k-1, or all 10): the
    model's ``id2label`` must name exactly those, in that order."""
    from priorswap.data.fashion_mnist import CLASS_NAMES

    expected = [CLASS_NAMES[c] for c in classes] if classes else list(CLASS_NAMES)
    how = f"Fashion-MNIST classes {list(classes)}" if classes else "the 10 Fashion-MNIST classes"
    if not id2label:
        raise PriorswapError(
            f"--classifier fmnist scores {how}, but {model} has no class names (id2label.json) to check them against"
        )
    names = [id2label.get(i, str(i)) for i in range(num_classes)]
    if [_norm(n) for n in names] == [_norm(n) for n in expected]:
        return
    hint = ""
    fmnist = {_norm(n): i for i, n in enumerate(CLASS_NAMES)}
    if all(_norm(n) in fmnist for n in names):  # Fashion-MNIST classes, but not the ones --classes names
        hint = f"; its classes are Fashion-MNIST's, so pass --classes {' '.join(str(fmnist[_norm(n)]) for n in names)}"
    raise PriorswapError(
        f"--classifier fmnist scores {how} ({_shown(expected)}), but {model} has {num_classes} classes "
        f"({_shown(names)}){hint or '; drop --classifier or pass a classifier of these classes'}"
    )


def check_classifier_width(classifier, images: torch.Tensor, num_classes: int, model: str, ref: str) -> None:
    """A classifier file must give one logit per class of the model: its width is read from real images (the
    first validation batch), so a 10-way classifier on a 4-class fine-tune is refused before sampling."""
    with torch.no_grad():
        logits = classifier(images[:2])
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise PriorswapError(
            f"--classifier {ref!r} gives logits of shape {tuple(logits.shape)} but {model} has {num_classes} "
            f"classes; label accuracy needs one logit per class of the model, in its order"
        )


def reference_note(
    n: int,
    dim: int,
    metric: str,
    data: str,
    source: str = "{data} validation split",
    hint: str = "use a larger validation split, or more --reference-samples",
) -> tuple[str, str]:
    """(the line that says what the Fréchet reference is, a warning or "" ); the warning is also issued when the
    reference has fewer images than feature dimensions. ``source`` and ``hint`` word it for another command."""
    line = f"reference: {n} real images ({source.format(data=data)}), {dim}-d features for {metric}"
    if n >= dim:
        return line, ""
    warning = (
        f"the {metric} reference holds {n} images, fewer than its {dim} feature dimensions: its covariance is "
        f"rank-deficient, so the distance is not a meaningful Fréchet distance ({hint})"
    )
    warnings.warn(warning, stacklevel=2)
    return line, warning
