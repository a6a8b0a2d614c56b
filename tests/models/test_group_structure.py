"""The `gradual` and `full` strategies on the real backbones the README offers (resnet50, efficientnet_b4),
built without pretrained weights: their layer groups are the documented ones (stem, the stages, the head),
gradual unfreezing opens them from the top one per `unfreeze_every` epochs, each group trains at its own
layer-decayed learning rate, and a real optimiser step at 32 px moves exactly the open groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.backbones import create_backbone
from pipelines.training.strategies import (
    apply_freeze,
    build_optimizer,
    layer_groups,
    set_train_mode,
    unfrozen_count,
)

# Each group's top-level modules, bottom (stem) to top (head).
GROUPS = {
    "resnet50": [{"conv1", "bn1"}, {"layer1"}, {"layer2"}, {"layer3"}, {"layer4"}, {"fc"}],
    "efficientnet_b4": [
        {"conv_stem", "bn1"},
        *({f"blocks.{i}"} for i in range(6)),
        {"blocks.6", "conv_head", "bn2"},  # timm merges the head conv into the last stage (MATCH_PREV_GROUP)
        {"classifier"},
    ],
}
LR, DECAY, EVERY = 1e-3, 0.5, 2


def module_of(name: str) -> str:
    """'layer1.0.conv1.weight' -> 'layer1'; 'blocks.3.1.conv_dw.weight' -> 'blocks.3'."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]


@pytest.fixture(scope="module", params=sorted(GROUPS))
def built(request: pytest.FixtureRequest) -> tuple[str, nn.Module, list[list[str]]]:
    torch.manual_seed(0)
    model = create_backbone(request.param, weights="none", num_classes=2)
    return request.param, model, layer_groups(model)


def test_groups_are_stem_stages_head(built: tuple[str, nn.Module, list[list[str]]]) -> None:
    name, model, groups = built
    assert [{module_of(n) for n in g} for g in groups] == GROUPS[name]
    assert sorted(n for g in groups for n in g) == sorted(n for n, _ in model.named_parameters())


def test_gradual_opens_one_group_from_the_top_every_n_epochs(built: tuple[str, nn.Module, list[list[str]]]) -> None:
    _, model, groups = built
    n = len(groups)
    for epoch in range(EVERY * (n + 1)):
        apply_freeze(model, groups, unfrozen_count("gradual", epoch, n, EVERY))
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        opened = [i for i, g in enumerate(groups) if set(g) <= trainable]
        closed = [i for i, g in enumerate(groups) if not set(g) & trainable]
        expected = min(n, 1 + epoch // EVERY)
        assert opened == list(range(n - expected, n)), epoch  # the head first, then down, never a skipped group
        assert closed == list(range(n - expected)), epoch


def test_layer_decay_per_group_and_a_real_step_at_32px(built: tuple[str, nn.Module, list[list[str]]]) -> None:
    _, model, groups = built
    n = len(groups)
    optimizer = build_optimizer(model, groups, lr=LR, weight_decay=0.01, layer_decay=DECAY)
    index = {id(p): i for i, g in enumerate(groups) for name, p in model.named_parameters() if name in g}
    for param_group in optimizer.param_groups:
        i = param_group["layer_group"]
        assert param_group["lr"] == pytest.approx(LR * DECAY ** (n - 1 - i))
        assert {index[id(p)] for p in param_group["params"]} == {i}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))

    open_groups = 3  # gradual, epoch 2 * EVERY: the head and the two groups under it
    apply_freeze(model, groups, unfrozen_count("gradual", 2 * EVERY, n, EVERY))
    set_train_mode(model)
    frozen_bn = [m for m in model.modules() if isinstance(m, _BatchNorm) and not m.weight.requires_grad]
    assert frozen_bn and all(not m.training for m in frozen_bn)  # frozen BatchNorm keeps its statistics
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(torch.randn(2, 1, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    for i, g in enumerate(groups):
        moved = [name for name in g if not torch.equal(before[name], model.get_parameter(name))]
        if i >= n - open_groups:
            assert moved, f"group {i} is open but did not move"
        else:
            assert moved == [], f"group {i} is frozen but moved: {moved[:3]}"
