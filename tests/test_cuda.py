"""On a CUDA GPU: the same detections as on the CPU, training under fp16 and bf16 AMP, the uint8
pinned-memory input path, and RoI pooling that keeps float32 boxes under autocast.

Skipped without CUDA (conftest); ``make gpu-check`` runs them (``pytest -m cuda``).
"""

import json
from dataclasses import replace

import pytest
import torch

from detect import load_config
from detect.data.build import build_dataset
from detect.data.image_io import to_float_image
from detect.data.loader import build_train_loader, stop_workers
from detect.engine.trainer import train
from detect.export import match_detections
from detect.models.poolers import RoIPooler
from detect.throughput import TOY, build_models
from training_runs import CONFIG, LOSSES, TINY

pytestmark = pytest.mark.cuda


@pytest.fixture
def float32_cuda():
    """Full float32 matmuls and convolutions (no TF32), so CUDA computes what the CPU computes, to rounding."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_cpu_and_cuda_detections_agree(coco8, float32_cuda):
    # torchvision's R50-FPN initialisation, converted, with class scores sharp enough to give detections.
    model = build_models(replace(TOY, height=320, width=512))["detect"].eval()  # inputs resized to 320-512 px
    images = coco8["images"][:2]
    with torch.inference_mode():
        on_cpu = model(images)
        on_cuda = model.to("cuda")([i.cuda() for i in images])
    for c, g in zip(on_cpu, on_cuda):
        g = {k: v.cpu() for k, v in g.items()}
        assert len(c["boxes"]) > 20  # the comparison has substance
        # A detection at the score threshold or an NMS tie may flip on rounding; the rest must match.
        assert match_detections(c, g, score_tol=1e-3).float().mean() >= 0.95
        assert match_detections(g, c, score_tol=1e-3).float().mean() >= 0.95


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_training_on_cuda_under_amp_gives_finite_losses(amp, shapes, tmp_path):
    """The whole training path: worker, pinned uint8 batches, conversion on the device, AMP, evaluation."""
    data = [
        f"data.train.root={shapes}/train/images", f"data.train.ann_file={shapes}/annotations/train.json",
        f"data.val.root={shapes}/val/images", f"data.val.ann_file={shapes}/annotations/val.json",
    ]
    overrides = [*TINY, *data, "train.device=cuda", f"train.amp={amp}", "data.num_workers=1", "train.max_iter=3",
                 "train.checkpoint_period=0", f"output_dir={tmp_path}"]
    metrics = train(load_config(CONFIG, overrides))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    for record in records:
        assert all(torch.isfinite(torch.tensor(record[k])) and record[k] >= 0 for k in LOSSES), record
        assert record["memory_mb"] > 0
    assert "bbox" in metrics and (tmp_path / "model_final.pth").exists()


def test_pinned_uint8_batches_convert_on_cuda_to_the_cpu_floats(shapes):
    cfg = load_config(CONFIG, [*TINY, f"data.train.root={shapes}/train/images", f"data.train.ann_file={shapes}/annotations/train.json"])
    dataset = build_dataset(cfg.data.train, cfg.data, is_train=True)
    batches = iter(build_train_loader(dataset, 2, num_workers=1, aspect_ratio_grouping=False, seed=0, pin_memory=True))
    try:
        images, targets = next(batches)
    finally:
        stop_workers(batches)
    for image, target in zip(images, targets):
        assert image.dtype == torch.uint8 and image.is_pinned() and target["boxes"].is_pinned()
        on_device = to_float_image(image.to("cuda", non_blocking=True))
        assert on_device.device.type == "cuda" and on_device.dtype == torch.float32
        assert torch.equal(on_device.cpu(), to_float_image(image))  # bit for bit


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pool_type", ["align", "pool"])
def test_roi_pooler_under_cuda_autocast_keeps_float32_boxes(dtype, pool_type):
    check_pooler_keeps_float32_boxes("cuda", dtype, pool_type)


def check_pooler_keeps_float32_boxes(device: str, dtype: torch.dtype, pool_type: str) -> None:
    """Pooling under ``dtype`` autocast equals float32 pooling of the same (exactly representable) features."""
    # Past 2048 px fp16 steps are 2 px and bf16 steps 16 px: corners rounded to them would pool elsewhere.
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 4, 64, 800, generator=g).to(dtype).float().to(device)  # stride 4: 3200 x 256 px
    corners = torch.rand(40, 2, generator=g) * torch.tensor([1000.0, 150.0]) + torch.tensor([2100.0, 5.0])
    sizes = torch.rand(40, 2, generator=g) * 80 + 10
    rois = torch.cat([torch.zeros(40, 1), corners, corners + sizes], dim=1).to(device)
    pooler = RoIPooler(7, [4], sampling_ratio=2, aligned=False, pool_type=pool_type)
    reference = pooler([feature], rois)  # float32 throughout
    with torch.autocast(device, dtype=dtype):
        pooled = pooler([feature.to(dtype)], rois)
    resolution = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11  # relative rounding of the autocast dtype
    torch.testing.assert_close(pooled.float(), reference, rtol=2 * resolution, atol=1e-6)
    # The check has teeth: boxes rounded to the autocast dtype pool visibly different values.
    rounded = pooler([feature], rois.to(dtype).float())
    assert (rounded - reference).abs().max() > 0.1
