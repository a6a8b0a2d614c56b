"""Warm start: begin training from a registered model version's weights instead of random or ImageNet ones.

The source artifact is read with ``ClassifierArtifact.load`` (``weights_only``). Its classifier rows are
re-ordered to the new class order, or mapped by an explicit ``class_map`` (new class -> old class, or None for
a fresh row); every other tensor is copied as is, so the backbone must be the same architecture.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.artifact import ClassifierArtifact
from models.backbones import classifier_of

SHA_SHOWN = 12  # hex digits of the artifact's sha256 in labels and descriptions


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def match_classes(
    old: list[str], new: list[str], class_map: dict[str, str | None] | None = None
) -> dict[str, str | None]:
    """New class -> the old class whose head row it starts from (None: a fresh row).

    A new class takes the row of the old class ``class_map`` names for it (None asks for a fresh row), else the
    row of the old class of the same name. Raises ``ValueError`` naming every class left unmatched, and any map
    entry that names a class not in the new or the old list.
    """
    class_map = dict(class_map or {})
    bad_keys = sorted(k for k in class_map if k not in new)
    bad_values = sorted(v for v in class_map.values() if v is not None and v not in old)
    if bad_keys or bad_values:
        parts = []
        if bad_keys:
            parts.append(f"class_map keys {', '.join(bad_keys)} are not classes of the dataset ({', '.join(new)})")
        if bad_values:
            parts.append(
                f"class_map values {', '.join(bad_values)} are not classes of the source model ({', '.join(old)})"
            )
        raise ValueError("; ".join(parts))
    mapping: dict[str, str | None] = {}
    unmatched = []
    for name in new:
        if name in class_map:
            mapping[name] = class_map[name]
        elif name in old:
            mapping[name] = name
        else:
            unmatched.append(name)
    if unmatched:
        raise ValueError(
            f"classes {', '.join(unmatched)} of the new dataset are not classes of the source model "
            f"({', '.join(old)}): map each in class_map to a source class, or to null for a fresh head row"
        )
    return mapping


@dataclass(frozen=True)
class InitState:
    """Starting weights from a registered version, and how to describe where they came from."""

    state_dict: dict[str, torch.Tensor]
    backbone: str
    class_names: list[str]  # the source model's classes, in its head's row order
    mapping: dict[str, str | None]  # new class -> source class (None: fresh row)
    model_name: str
    version: int
    sha256: str
    mean: float
    std: float

    @property
    def label(self) -> str:
        """The job's ``weights`` label: ``init:<model>/v<version>``."""
        return f"init:{self.model_name}/v{self.version}"

    @property
    def description(self) -> str:
        return f"warm-started from {self.model_name} v{self.version} (artifact sha256 {self.sha256[:SHA_SHOWN]})"

    def record(self) -> dict:
        """JSON-able provenance for the artifact's metadata and the report."""
        return {
            "model": self.model_name,
            "version": self.version,
            "artifact_sha256": self.sha256,
            "class_map": dict(self.mapping),
            "description": self.description,
        }


def load_init_state(
    path: Path,
    new_classes: list[str],
    *,
    model_name: str,
    version: int,
    class_map: dict[str, str | None] | None = None,
    expected_sha256: str | None = None,
) -> InitState:
    """Read a registered version's artifact as a warm start for ``new_classes``.

    ``expected_sha256`` (recorded when the job was created) guards against a file changed since.
    """
    sha = file_sha256(path)
    if expected_sha256 and sha != expected_sha256:
        raise ValueError(
            f"the artifact of {model_name} v{version} changed since the job was created "
            f"(sha256 {sha[:SHA_SHOWN]}, expected {expected_sha256[:SHA_SHOWN]})"
        )
    artifact = ClassifierArtifact.load(path)
    mapping = match_classes(list(artifact.class_names), list(new_classes), class_map)
    return InitState(
        state_dict=dict(artifact.state_dict),
        backbone=artifact.backbone,
        class_names=list(artifact.class_names),
        mapping=mapping,
        model_name=model_name,
        version=version,
        sha256=sha,
        mean=float(artifact.mean),
        std=float(artifact.std),
    )


def apply_init_state(model: nn.Module, init: InitState, new_classes: list[str]) -> None:
    """Load ``init`` into ``model`` (built for ``new_classes``): head rows mapped, everything else strict.

    Fresh head rows keep the model's own random initialisation.
    """
    head = classifier_of(model)
    prefix = next(n for n, m in model.named_modules() if m is head) + "."
    target = model.state_dict()
    old_index = {name: i for i, name in enumerate(init.class_names)}
    state: dict[str, torch.Tensor] = {}
    for key, value in init.state_dict.items():
        if not key.startswith(prefix):
            state[key] = value
            continue
        mapped = target[key].detach().clone()
        for i, name in enumerate(new_classes):
            source = init.mapping.get(name)
            if source is not None:
                mapped[i] = value[old_index[source]]
        state[key] = mapped
    model.load_state_dict(state, strict=True)
