"""Attention-map images of a MESM checkpoint (e2e/analysis/attention.py, e2e/reporting/attention_maps.py)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from e2e.analysis.attention import face_images
from e2e.cli import main
from e2e.data.dataset import EmotionDataset
from e2e.models import load_config
from e2e.reporting.attention_maps import ALPHA, DIM, HIGHLIGHT, overlay, upsample, visualize
from e2e.reporting.plots import ATTENTION_MAP_SIZE, DPI


def _marked(image: np.ndarray, overlaid: np.ndarray) -> np.ndarray:
    """Pixels :func:`overlay` highlighted: red differs from the dimmed image (see its docstring)."""
    return ~np.isclose(overlaid[..., 0], DIM * image[..., 0])


def test_overlay_marks_exactly_the_upsampled_mask():
    rng = np.random.default_rng(0)
    image = rng.random((48, 48, 3))
    mask = rng.random((6, 6)) < 0.4
    out = overlay(image, mask)
    kept = upsample(mask, (48, 48))
    assert kept.shape == (48, 48) and kept[::8, ::8].tolist() == mask.tolist()
    assert (_marked(image, out) == kept).all()
    np.testing.assert_allclose(out[kept], (1 - ALPHA) * image[kept] + ALPHA * HIGHLIGHT)
    np.testing.assert_allclose(out[~kept], DIM * image[~kept])


def test_upsample_refuses_a_non_integer_factor():
    with pytest.raises(ValueError, match="cannot upsample"):
        upsample(np.ones((5, 5), dtype=bool), (48, 48))


@pytest.fixture(scope="module")
def checkpoints(demo_iemocap_cache, tmp_path_factory) -> dict[str, Path]:
    """A MESM checkpoint trained for one epoch on the demo corpus, and a copy that claims to be FE2E
    (visualize refuses it from its config alone)."""
    root = tmp_path_factory.mktemp("vis_runs")
    overrides = [
        f"data.data_dir={demo_iemocap_cache}",
        "train.epochs=1",
        "train.progress=false",
        "data.max_frames=4",
        "data.max_chunks=4",
    ]  # fewer frames per utterance: a faster epoch
    args = ["train", "--config", "configs/demo/mesm.yaml", "--out", str(root / "mesm")]
    assert main([*args, *(item for override in overrides for item in ("--set", override))]) == 0
    mesm = root / "mesm" / "checkpoints" / "best.pt"
    checkpoint = torch.load(mesm, weights_only=True)
    checkpoint["config"]["model"]["name"] = "fe2e"
    torch.save(checkpoint, root / "fe2e.pt")
    return {"mesm": mesm, "fe2e": root / "fe2e.pt"}


@pytest.fixture(scope="module")
def test_ids(demo_iemocap_cache) -> list[str]:
    return (demo_iemocap_cache / "splits" / "test.txt").read_text(encoding="utf-8").split()[:2]


def test_visualize_writes_images_masks_and_densities(checkpoints, test_ids, demo_iemocap_cache, tmp_path):
    result = visualize(checkpoints["mesm"], test_ids, tmp_path)
    assert [Path(path).name for path in result["images"]] == [f"{i}.png" for i in test_ids]
    for path in result["images"]:
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[:2] == (int(ATTENTION_MAP_SIZE[1] * DPI), int(ATTENTION_MAP_SIZE[0] * DPI))
        assert pixels[..., :3].std() > 0.05
    stored = json.loads((tmp_path / "density.json").read_text(encoding="utf-8"))
    assert stored == result["density"]
    config = load_config("configs/demo/mesm.yaml", [f"data.data_dir={demo_iemocap_cache}", "data.max_frames=4"])
    dataset = EmotionDataset(demo_iemocap_cache, "test", config, tokenizer=None)
    faces = {dataset.items[i].id: dataset[i]["faces"] for i in range(len(dataset)) if dataset.items[i].id in test_ids}
    for utterance in test_ids:
        masks = {
            m: [np.array(block, dtype=bool) for block in blocks] for m, blocks in result["masks"][utterance].items()
        }
        assert set(masks) == {"a", "v"} and all(len(blocks) == 3 for blocks in masks.values())
        densities = stored["per_utterance"][utterance]
        for modality, blocks in masks.items():
            assert densities[modality] == pytest.approx([block.mean() for block in blocks])
            assert all(0 < value <= 1 for value in densities[modality])
        images = face_images(faces[utterance])
        assert [block.shape[1:] for block in masks["v"]] == [(24, 24), (12, 12), (6, 6)]
        for block in masks["v"]:
            for image, mask in zip(images, block):
                assert (_marked(image, overlay(image, mask)) == upsample(mask, (48, 48))).all()
    for modality, means in stored["mean"].items():
        assert means == pytest.approx(np.mean([stored["per_utterance"][i][modality] for i in test_ids], axis=0))


def test_visualize_errors_name_the_problem(checkpoints, test_ids, tmp_path):
    with pytest.raises(ValueError, match="no_such_utterance, other_missing"):
        visualize(checkpoints["mesm"], [test_ids[0], "no_such_utterance", "other_missing"], tmp_path)
    with pytest.raises(ValueError, match="'fe2e' has no sparse attention"):
        visualize(checkpoints["fe2e"], test_ids, tmp_path)
