"""The benchmark's weights, peers and run: the peers do the same work on the same weights."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DATA, REPO

from detect.benchmark.peers import Work, build_peer
from detect.benchmark.suite import TOY, detectron2_version, realistic_weights
from detect.benchmark.weights import detectron2_state_dict, read_images
from detect.benchmark.worker import INFERENCE_STAGES, TRAIN_STAGES, proposal_count
from detect.export import match_detections
from detect.models.detectron2_compat import convert_model_zoo
from detect.models.torchvision_compat import convert_fasterrcnn_resnet50_fpn

IMAGES = sorted(str(p) for p in (DATA / "coco8" / "images").glob("*.jpg"))
SIZE = (128, 192)
TOP_K = 300


@pytest.fixture(scope="module")
def weights(one_thread):
    work = Work.from_detect_config(post_nms_topk_test=TOP_K)
    return work, realistic_weights(work, IMAGES[:4], SIZE)


def _run(peer, image: torch.Tensor) -> tuple[dict, int]:
    """Detections of one image and the number of proposals the peer's RPN kept."""
    counts = []
    peer.stage_modules()["rpn"].register_forward_hook(lambda _, __, output: counts.append(proposal_count(output)))
    peer.model.eval()
    peer.set_size(*SIZE)
    with torch.no_grad():
        return peer.infer([image])[0], counts[0]


def test_peers_agree_on_one_image(weights):
    work, state = weights
    image = read_images(IMAGES[5:6], SIZE)[0]  # not one of the calibration images
    expected, expected_count = _run(build_peer("torchvision", state, work), image)
    got, count = _run(build_peer("detect", state, work), image)
    assert expected_count == count == TOP_K  # the calibrated RPN keeps its full proposal count
    assert 20 < len(expected["boxes"]) == len(got["boxes"])  # detections clear the score threshold
    assert match_detections(expected, got).all() and match_detections(got, expected).all()
    if detectron2_version() is None:
        return
    d2, d2_count = _run(build_peer("detectron2", state, work), image)
    assert d2_count == TOP_K
    # Detectron2's unrounded anchors move its boxes slightly: most detections, not all, are the same (90 of 100 measured)
    assert match_detections(expected, d2, 0.9, 0.05).float().mean() > 0.8


def test_detectron2_names_convert_back():
    """torchvision -> Detectron2 names here, then Detectron2 -> detect by the model-zoo converter,
    equals torchvision -> detect directly, but for the background's box deltas, which
    Detectron2 does not have and no peer uses."""
    from detect.benchmark.weights import build_torchvision

    state = build_torchvision(0).state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    direct = convert_fasterrcnn_resnet50_fpn(state)["model"]
    for kind in ("weight", "bias"):
        direct[f"roi_heads.predictor.bbox_pred.{kind}"][:4] = 0
    d2 = {"model": {k: v.numpy() for k, v in detectron2_state_dict(state).items()}}
    via_detectron2, arch = convert_model_zoo(d2, "converted")
    assert arch == "R_50_FPN"
    assert set(via_detectron2["model"]) == set(direct)
    for name, value in direct.items():
        assert torch.equal(via_detectron2["model"][name], value), name
    assert np.array_equal(d2["model"]["roi_heads.box_predictor.cls_score.bias"][-1], state["roi_heads.box_predictor.cls_score.bias"][0].numpy())


def test_toy_benchmark(tmp_path):
    """The whole run at toy size without detectron2: structure and sane values."""
    out = tmp_path / "toy.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tool = str(REPO / "tools/benchmark.py")
    subprocess.run([sys.executable, tool, "--toy", "--peers", "detect", "torchvision", "--json", str(out)], check=True, env=env, timeout=600)
    result = json.loads(out.read_text())
    assert result["detectron2"].startswith("absent")
    assert result["host"]["torch_threads"] > 0 and result["host"]["cpu"]
    for mode, peers in result["modes"].items():
        assert list(peers) == ["detect", "torchvision"], mode
        assert peers["detect"]["trainable_parameters"] == peers["torchvision"]["trainable_parameters"]  # the same frozen stages
        for name, figures in peers.items():
            for size, entry in figures["inference"].items():
                assert set(entry["stages"]) == set(INFERENCE_STAGES)
                assert all(t > 0 for t in entry["stages"].values()), (mode, name, size)
                assert entry["seconds"] == pytest.approx(sum(entry["stages"].values()))  # one repeat: they add up
                assert entry["proposals"] == TOY.work["post_nms_topk_test"], (mode, name)
                assert entry["detections"] > 0 and entry["peak_rss_mib"] > 100
            for group in ("train", "gt_boxes", "batch_size"):
                for key, entry in figures[group].items():
                    assert set(entry["stages"]) == set(TRAIN_STAGES)
                    assert entry["seconds"] > 0 and entry["peak_rss_mib"] > 100, (mode, name, group, key)
        assert list(peers["detect"]["gt_boxes"]) == [str(n) for n in TOY.gt_counts]
    for size, a in result["agreement"]["fp32"]["torchvision-detect"].items():
        assert a["agree"] and a["detections"][0] == a["detections"][1] > 0, size
    tables = subprocess.run([sys.executable, tool, "--markdown", str(out)], check=True, env=env, capture_output=True, text=True).stdout
    assert "| | detect | torchvision |" in tables and "inference 128x192, s/image" in tables
