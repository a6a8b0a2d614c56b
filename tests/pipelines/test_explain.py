"""Grad-CAM: shapes and ranges, model hygiene, and that the heatmap points at the evidence."""

from __future__ import annotations

import io

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from models.artifact import ClassifierArtifact
from pipelines.explain import cam_reference, cam_to_image_shape, explain, grad_cam, heatmap_overlay
from pipelines.infer import Predictor
from pipelines.preprocess import to_model_input
from tests.pipelines.conftest import Trained

SIZE = 96  # test_resnet's last feature map is 3x3 at 96 px: coarse, but enough to tell corners apart
MEAN, STD = 0.5, 0.25
CLASSES = ["NORMAL", "PNEUMONIA"]


def blob_image(rng: np.random.Generator, shape: tuple[int, int], centre: tuple[int, int] | None) -> np.ndarray:
    """Noisy background; a bright Gaussian blob at ``centre`` (None: no blob). uint8 HxW."""
    h, w = shape
    img = rng.normal(80.0, 20.0, size=shape)
    if centre is not None:
        yy, xx = np.mgrid[0:h, 0:w]
        img += 150.0 * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 6.0**2))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def blob_batch(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 = a blob anywhere; shapes vary so the model also sees the square padding."""
    xs, ys = [], []
    for _ in range(n):
        shape = [(SIZE, SIZE), (SIZE, 4 * SIZE // 3), (4 * SIZE // 3, SIZE)][rng.integers(3)]
        label = int(rng.integers(2))
        centre = (int(rng.integers(8, shape[0] - 8)), int(rng.integers(8, shape[1] - 8))) if label else None
        xs.append(to_model_input(blob_image(rng, shape, centre), image_size=SIZE, mean=MEAN, std=STD))
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


@pytest.fixture(scope="module")
def blob_artifact() -> ClassifierArtifact:
    """A test_resnet trained for a few dozen steps to detect a bright blob wherever it is."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = timm.create_model("test_resnet", pretrained=False, in_chans=1, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        x, y = blob_batch(rng, 32)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    x, y = blob_batch(rng, 128)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.8, f"the blob detector did not learn (accuracy {accuracy:.2f}); the cam test would be moot"
    return ClassifierArtifact(
        state_dict=model.state_dict(),
        backbone="test_resnet",
        model_args={"backbone": "test_resnet", "num_classes": 2, "in_chans": 1},
        class_names=CLASSES,
        image_size=SIZE,
        mean=MEAN,
        std=STD,
        temperature=1.3,
        positive_class="PNEUMONIA",
        threshold=0.5,
    )


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_grad_cam_shape_range_and_model_hygiene(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, in_chans=1, num_classes=2).train()
    x = to_model_input(blob_image(np.random.default_rng(0), (80, 80), (20, 20)), image_size=64, mean=MEAN, std=STD)
    cam = grad_cam(model, x[None], target_class=1)
    assert cam.shape == (64, 64) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0
    assert not model.training, "grad_cam must leave the model in eval mode"
    assert all(p.grad is None for p in model.parameters()), "grad_cam must not touch parameter gradients"


def test_grad_cam_refuses_inference_mode_but_works_under_no_grad(blob_artifact: ClassifierArtifact) -> None:
    model = blob_artifact.build_model()
    img = blob_image(np.random.default_rng(1), (SIZE, SIZE), (20, 20))
    x = to_model_input(img, image_size=SIZE, mean=MEAN, std=STD)[None]
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        grad_cam(model, x, target_class=1)
    with torch.inference_mode():
        x_inference = x.clone()  # an inference tensor from an earlier inference_mode block
    with torch.no_grad():
        cam = grad_cam(model, x_inference, target_class=1)
    np.testing.assert_allclose(cam, grad_cam(model, x, target_class=1), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(model, x, target_class=2)


@pytest.mark.parametrize("centre", [(14, 14), (14, 114), (82, 14), (82, 114)], ids=["tl", "tr", "bl", "br"])
def test_cam_follows_the_blob(blob_artifact: ClassifierArtifact, centre: tuple[int, int]) -> None:
    """On a non-square image (96 x 128), the heatmap's mass sits near the blob, whichever corner it is in."""
    shape = (96, 128)
    img = blob_image(np.random.default_rng(2), shape, centre)
    explained = explain(blob_artifact, img)  # target: the predicted class (a blob: PNEUMONIA)
    cam, png = explained.cam, explained.png
    assert explained.class_name == "PNEUMONIA" and explained.probability > 0.5
    assert cam.shape == shape and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0 and cam.max() - cam.min() > 0.5
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    dist = np.hypot(yy - centre[0], xx - centre[1])
    near, far = cam[dist < 24].mean(), cam[dist > 64].mean()
    assert near > 0.3 and near > 4 * far, f"cam near the blob {near:.3f}, far from it {far:.3f}"
    peak = np.unravel_index(int(cam.argmax()), shape)
    assert np.hypot(peak[0] - centre[0], peak[1] - centre[1]) < 40

    overlay = Image.open(io.BytesIO(png))
    assert overlay.format == "PNG" and overlay.mode == "RGB" and overlay.size == (shape[1], shape[0])
    rgb = np.asarray(overlay)
    assert rgb.shape == (*shape, 3)
    # Where the cam is ~0 the X-ray shows through unchanged (grey); near the blob it is coloured.
    cold = cam < 0.01
    assert cold.any()
    assert np.abs(rgb[cold].astype(int) - img[cold][:, None].astype(int)).max() <= 2
    hot = cam > 0.8 * cam.max()
    assert np.ptp(rgb[hot].astype(int), axis=1).mean() > 20


def test_explain_with_predictor_matches_artifact_and_accepts_class_names(blob_artifact: ClassifierArtifact) -> None:
    img = blob_image(np.random.default_rng(3), (SIZE, SIZE), (30, 60))
    predictor = Predictor(blob_artifact)
    cam_a = explain(blob_artifact, img).cam
    cam_p = explain(predictor, img, target_class="PNEUMONIA").cam
    np.testing.assert_allclose(cam_a, cam_p, atol=1e-5)
    assert not predictor.model.training
    assert all(p.grad is None for p in predictor.model.parameters())
    assert predictor.predict([img])[0].label == "PNEUMONIA"  # the predictor still works afterwards
    with pytest.raises(ValueError, match="unknown class"):
        explain(predictor, img, target_class="EFFUSION")
    with pytest.raises(TypeError):
        explain(object(), img)  # type: ignore[arg-type]


def test_heatmap_overlay_resizes_a_model_input_cam_to_the_image() -> None:
    img = np.full((60, 90), 100, dtype=np.uint8)
    cam = np.zeros((32, 32), dtype=np.float32)
    cam[:8, :8] = 1.0  # the top-left of the padded square: padding above the image, the image's left edge
    rgb = np.asarray(Image.open(io.BytesIO(heatmap_overlay(img, cam))))
    assert rgb.shape == (60, 90, 3) and rgb.dtype == np.uint8
    back = cam_to_image_shape(cam, (60, 90))
    assert back.shape == (60, 90)
    # The square is 90 px, the image sits at rows 15..74: only the rows up to ~22 of the square are hot.
    assert back[:5, :10].max() > 0.5 and back[20:, :].max() < 0.05 and back[:, 40:].max() < 0.05
    with pytest.raises(ValueError, match="uint8"):
        heatmap_overlay(img.astype(np.float32), cam)


def test_default_target_is_the_predicted_class_and_a_requested_one_is_named(blob_artifact: ClassifierArtifact) -> None:
    rng = np.random.default_rng(4)
    normal = explain(blob_artifact, blob_image(rng, (SIZE, SIZE), None))
    assert normal.class_name == "NORMAL" and normal.class_index == 0
    asked = explain(blob_artifact, blob_image(rng, (SIZE, SIZE), None), target_class="PNEUMONIA")
    assert asked.class_name == "PNEUMONIA" and asked.probability < 0.5
    assert asked.scale["min"] == 0.0 and asked.scale["max"] == 1.0 and asked.scale["colormap"] == "jet"
    assert "PNEUMONIA" in asked.scale["meaning"]
    legend = Image.open(io.BytesIO(asked.legend_png))
    assert legend.format == "PNG" and legend.size[0] > legend.size[1]


@pytest.mark.parametrize("with_reference", [True, False], ids=["validation-reference", "probability-weighted"])
def test_a_normal_film_shows_little_when_explaining_pneumonia(
    blob_artifact: ClassifierArtifact, with_reference: bool
) -> None:
    """The scale is comparable across films: no per-film stretching, so no evidence means no heat."""
    import dataclasses

    rng = np.random.default_rng(5)
    art = blob_artifact
    if with_reference:
        x, y = blob_batch(rng, 48)
        reference = cam_reference(art.build_model(), x, y, CLASSES)
        assert reference["reference"]["PNEUMONIA"] > 0
        art = dataclasses.replace(art, explanation=reference)
    shape = (SIZE, 4 * SIZE // 3)  # non-square: the map comes back at the film's H x W
    energy = {}
    for name, centre in (("normal", None), ("pneumonia", (40, 70))):
        explained = explain(art, blob_image(rng, shape, centre), target_class="PNEUMONIA")
        assert explained.cam.shape == shape and explained.cam.dtype == np.float32
        assert Image.open(io.BytesIO(explained.png)).size == (shape[1], shape[0])
        assert explained.scale["kind"] == ("validation-reference" if with_reference else "probability-weighted")
        energy[name] = float(explained.cam.mean())
    assert energy["normal"] < 0.25 * energy["pneumonia"], energy


def test_a_trained_artifact_carries_its_heatmap_reference(films_model: Trained) -> None:
    from pipelines.preprocess import load_canonical

    art = ClassifierArtifact.load(films_model.result.artifact_path)
    assert art.explanation["method"] == "grad-cam" and art.explanation["reference"]["PNEUMONIA"] > 0
    test = films_model.data.test
    normal = [load_canonical(p) for p, y in test if y == 0][:6]
    pneumonia = [load_canonical(p) for p, y in test if y == 1][:6]
    predictor = Predictor(art)
    e_normal = np.mean([explain(predictor, im, target_class="PNEUMONIA").cam.mean() for im in normal])
    e_pneumonia = np.mean([explain(predictor, im, target_class="PNEUMONIA").cam.mean() for im in pneumonia])
    assert e_normal < 0.5 * e_pneumonia, (e_normal, e_pneumonia)
