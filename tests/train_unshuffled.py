"""tools/train.py with the RPN's and RoI head's balanced samplers taking the lowest-indexed candidates.

    python tests/train_unshuffled.py CONFIG [tools/train.py arguments]
    torchrun --nproc_per_node 2 tests/train_unshuffled.py CONFIG [tools/train.py arguments]

Random candidate sampling draws from each process's own generator, so 2 processes
at batch 1 would sample other boxes than 1 process at batch 2; without it the
two compute the same thing, which is what tests/test_distributed.py checks.
"""

import runpy
import sys
from pathlib import Path

from detect.models.matcher import BalancedSampler

TRAIN = Path(__file__).resolve().parent.parent / "tools" / "train.py"
BalancedSampler.__init__.__defaults__ = (False,)  # shuffle=False
sys.argv = [str(TRAIN), *sys.argv[1:]]
runpy.run_path(str(TRAIN), run_name="__main__")
