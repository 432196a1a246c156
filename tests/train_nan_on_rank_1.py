"""tools/train.py whose loss_box becomes NaN in the second iteration of rank 1 only.

    torchrun --nproc_per_node 2 tests/train_nan_on_rank_1.py CONFIG [tools/train.py arguments]
"""

import os
import runpy
import sys
from pathlib import Path

from detect.models.faster_rcnn import FasterRCNN

TRAIN = Path(__file__).resolve().parent.parent / "tools" / "train.py"
forward = FasterRCNN.forward
calls = []


def nan_in_second_iteration(self, *args, **kwargs):
    losses = forward(self, *args, **kwargs)
    if self.training:
        calls.append(1)
        if len(calls) == 2 and os.environ["RANK"] == "1":
            losses["loss_box"] = losses["loss_box"] * float("nan")
    return losses


FasterRCNN.forward = nan_in_second_iteration
sys.argv = [str(TRAIN), *sys.argv[1:]]
runpy.run_path(str(TRAIN), run_name="__main__")
