"""tools/train.py, except that the second checkpoint write SIGKILLs the process halfway through its file.

    python tests/train_killed_while_saving.py CONFIG [tools/train.py arguments]

What a machine's power loss or the kernel's out-of-memory killer does to a run
that is writing a checkpoint: no Python code runs after it.
"""

import io
import os
import runpy
import signal
import sys
from pathlib import Path

import torch

TRAIN = Path(__file__).resolve().parent.parent / "tools" / "train.py"
save = torch.save
saves = []


def save_then_die(obj, f, *args, **kwargs) -> None:
    saves.append(1)
    if len(saves) < 2:
        return save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)


torch.save = save_then_die
sys.argv = [str(TRAIN), *sys.argv[1:]]
runpy.run_path(str(TRAIN), run_name="__main__")
