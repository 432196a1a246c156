"""Time detect's R50-FPN Faster R-CNN beside torchvision's on the same weights and input.

    python tools/benchmark.py                       # 800x1333, CPU, 3 repeats
    python tools/benchmark.py --size 512 853 --amp bf16 --channels-last --json bench.json

Both models get the same converted weights, the same images and the same
deterministic-free training step (SGD, batch of --train-batch images). Prints a
table of median seconds and writes it as JSON with --json.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from detect import build_model, load_config
from detect.checkpoint import save_checkpoint
from detect.engine.inference import autocast
from detect.models.torchvision_compat import convert_fasterrcnn_resnet50_fpn

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "frcnn_r50_fpn_coco.py"


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step(model: nn.Module, images, targets, device: torch.device, amp: str):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)

    def step() -> None:
        with autocast(device, amp):
            losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="for detect only")
    parser.add_argument("--channels-last", action="store_true", help="for detect only")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "w.pth", convert_fasterrcnn_resnet50_fpn(reference.state_dict()))
        model = build_model(load_config(CONFIG, [f"model.weights={Path(tmp) / 'w.pth'}"]))
    for m in reference.modules():  # torchvision's untrained backbone has BatchNorm; freeze it like detect's
        if isinstance(m, nn.BatchNorm2d):
            m.requires_grad_(False)
    reference.to(device)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    h, w = args.size
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=generator, device=device) for _ in range(args.train_batch)]
    box = torch.tensor([[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h]], device=device)
    targets = [{"boxes": box, "labels": torch.tensor([1, 3], device=device)} for _ in images]

    rows = {}
    for name, net, amp in (("torchvision", reference, "off"), ("detect", model, args.amp)):
        net.eval()

        def infer(net=net, amp=amp) -> None:
            with torch.inference_mode(), autocast(device, amp):
                net(images[:1])

        inference = median_seconds(infer, args.repeats)
        net.train()
        if name == "torchvision":
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        training = median_seconds(train_step(net, images, targets, device, amp), args.repeats)
        rows[name] = {"inference_s_per_image": inference, "train_s_per_step": training}

    print(f"{h}x{w}, {device}, {torch.get_num_threads()} threads, train batch {args.train_batch}, detect amp={args.amp} channels_last={args.channels_last}")
    print(f"{'':<12} {'inference s/img':>16} {'train s/step':>14}")
    for name, row in rows.items():
        print(f"{name:<12} {row['inference_s_per_image']:>16.3f} {row['train_s_per_step']:>14.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": [h, w], "device": str(device), "amp": args.amp, "channels_last": args.channels_last, **rows}, indent=2))


if __name__ == "__main__":
    main()
