"""Prompt templates for CLIP zero-shot heads: a small ensemble per dataset.

Each template holds one `{}` for a class name. Averaging the text embeddings of several
phrasings of a class (the CLIP paper's prompt ensembling) gives a better class embedding than
any one prompt, and the phrasing that suits handwritten digits does not suit photos of objects,
so every dataset brings its own ensemble; a dataset without one (an image folder) gets a
generic ensemble for photos.
"""

from __future__ import annotations

from string import Formatter

__all__ = ["check_templates", "prompt_templates"]

_GENERIC = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
)
# Low-resolution photos of objects: a subset of the CLIP paper's CIFAR templates.
_CIFAR = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a pixelated photo of a {}.",
    "a photo of the small {}.",
)
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "digits": (
        "a photo of the number {}.",
        "a handwritten digit {}.",
        "a blurry photo of the digit {}.",
        "a low resolution image of the number {}.",
    ),
    "mnist": (
        'a photo of the number: "{}".',
        "a handwritten digit {}.",
        "a black and white photo of the number {}.",
    ),
    "svhn": (
        'a photo of the number: "{}".',
        "a street number {}.",
        "a photo of the house number {}.",
    ),
    "fashion_mnist": (
        "a photo of a {}.",
        "a black and white photo of a {}.",
        "a low resolution photo of a {}.",
        "a photo of a {}, a type of clothing.",
    ),
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
}


def prompt_templates(dataset_name: str) -> tuple[str, ...]:
    """The dataset's template ensemble; the generic one for image folders and unknown names."""
    return _TEMPLATES.get(dataset_name, _GENERIC)


def check_templates(templates: list[str] | tuple[str, ...]) -> None:
    """Raise ValueError unless there is at least one template and each has exactly one `{}`."""
    if not templates:
        raise ValueError("no templates: give at least one, e.g. ['a photo of a {}.']")
    for template in templates:
        try:
            fields = [field for _, field, _, _ in Formatter().parse(template) if field is not None]
        except ValueError as error:  # unbalanced braces
            raise ValueError(f"{template!r} is not a format string ({error})") from error
        if fields != [""]:
            raise ValueError(f"{template!r} must hold exactly one {{}} for the class name (literal braces: {{{{ }}}})")
