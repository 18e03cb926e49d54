"""Run a small training from the command line and print its summary as JSON (used by the tests).

Usage: python train_probe.py OUT_DIR key=value ...   (works under torchrun too)

PROBE_KILL=checkpoint:N | weights | plots kills the process with SIGKILL in the middle of the N-th
checkpoint write (half its bytes written), of the final weights write, or of the plots: the
crashes a resume must survive.
"""

import json
import os
import signal
import sys

import torch

from inceptionv4.train import train

torch.set_num_threads(1)


def _killed_midway(write):
    """``write(obj, path, ...)`` that writes half of what it would, then dies as kill -9 would."""

    def half_then_die(obj, path, *args, **kwargs):
        write(obj, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    return half_then_die


kill = os.environ.get("PROBE_KILL", "")
if kill.startswith("checkpoint:"):
    import inceptionv4.train.checkpoint as checkpoint

    calls, at, save = [0], int(kill.split(":")[1]), checkpoint.torch.save

    def counted(obj, path, *args, **kwargs):
        calls[0] += 1
        (_killed_midway(save) if calls[0] == at else save)(obj, path, *args, **kwargs)

    checkpoint.torch.save = counted
elif kill == "weights":
    import safetensors.torch

    safetensors.torch.save_file = _killed_midway(safetensors.torch.save_file)
elif kill == "plots":
    import inceptionv4.train.trainer as trainer

    trainer.plot_run = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
out_dir, *pairs = sys.argv[1:]
settings = {"model": "inception_resnet_v1", "dataset": "synthetic", "input_size": 75, "batch_size": 8, "epochs": 1,
            "recipe": "finetune", "from_scratch": True, "workers": 0, "progress": False, "plots": False, "out_dir": out_dir}  # fmt: skip
for pair in pairs:
    key, value = pair.split("=", 1)
    settings[key] = json.loads(value)
summary = train(**settings)
summary.pop("confusion", None)
print("SUMMARY " + json.dumps({"rank": int(os.environ.get("RANK", "0")), **summary}), flush=True)
