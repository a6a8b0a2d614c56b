"""The backbones Hilum knows by name; imported by both ``backbones`` and ``weights`` (no cycle between them)."""

from __future__ import annotations

KNOWN_BACKBONES: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "test_resnet",
    "test_efficientnet",
)


def check_backbone_name(name: str) -> None:
    """Raise ``ValueError`` with the fix when ``name`` is not a supported backbone."""
    if name not in KNOWN_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(KNOWN_BACKBONES)}")
