"""Run a small training from the command line and print its summary as JSON (used by the tests).

Usage: python train_probe.py OUT_DIR key=value ...   (works under torchrun too)
"""

import json
import os
import sys

import torch

from inceptionv4.engine import train

torch.set_num_threads(1)
out_dir, *pairs = sys.argv[1:]
settings = {"model": "inception_resnet_v1", "dataset": "synthetic", "input_size": 75, "batch_size": 8, "epochs": 1,
            "recipe": "finetune", "workers": 0, "progress": False, "plots": False, "out_dir": out_dir}  # fmt: skip
for pair in pairs:
    key, value = pair.split("=", 1)
    settings[key] = json.loads(value)
summary = train(**settings)
summary.pop("confusion", None)
print("SUMMARY " + json.dumps({"rank": int(os.environ.get("RANK", "0")), **summary}), flush=True)
