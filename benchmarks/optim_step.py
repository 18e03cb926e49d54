"""The optimizer step and the EMA update of a training step, in each form, side by side.

    python benchmarks/optim_step.py                    # CPU, both released models
    python benchmarks/optim_step.py --device cuda      # a GPU (benchmarks/gpu.sh runs this too)

Inception-v4 has 449 parameter tensors and Inception-ResNet-v2 694; every step updates each of
them (and the EMA averages about 1,300 tensors, BN statistics included). Done one tensor at a
time, that is thousands of small kernels per step. This prints the time of one update per form,
the fastest of ``--repeats``, with every form run in the same process on the same gradients.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import inceptionv4 as iv
from inceptionv4.train.optim import EMA, TFRMSprop, build_optimizer, param_groups


class LoopEMA(EMA):
    """The EMA update one tensor at a time (what :class:`EMA` did before its foreach form)."""

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self._updates += 1
        decay = min(self.decay, (1 + self._updates) / (10 + self._updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v, 1 - decay)
            else:
                self.shadow[k].copy_(v)


def fastest(fn, device: torch.device, repeats: int) -> float:
    """ms of the fastest of ``repeats`` calls, after one untimed call (state allocation)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def forms(model: torch.nn.Module) -> dict[str, object]:
    """Each optimizer form over ``model``: what the trainer builds, and the per-tensor alternatives."""
    groups = lambda: param_groups(model, 4e-5)  # a fresh list of groups per optimizer
    return {
        "rmsprop_tf loop": TFRMSprop(groups(), foreach=False),
        "rmsprop_tf foreach": TFRMSprop(groups(), foreach=True),
        "rmsprop_tf default (trainer)": TFRMSprop(groups()),
        "sgd per tensor": torch.optim.SGD(groups(), lr=0.01, momentum=0.9, nesterov=True, foreach=False),
        "sgd foreach": torch.optim.SGD(groups(), lr=0.01, momentum=0.9, nesterov=True, foreach=True),
        "sgd fused (trainer)": build_optimizer("sgd", model, 0.01, 4e-5),
        "adamw per tensor": torch.optim.AdamW(groups(), lr=1e-3, foreach=False),
        "adamw foreach": torch.optim.AdamW(groups(), lr=1e-3, foreach=True),
        "adamw fused (trainer)": build_optimizer("adamw", model, 1e-3, 4e-5),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["inception_v4", "inception_resnet_v2"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    dev = torch.device(args.device)
    rows = []
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| model | what | ms per step | vs per-tensor form |")
    print("|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        model = iv.create_model(name).to(dev)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-2
        timed = {what: fastest(opt.step, dev, args.repeats) for what, opt in forms(model).items()}
        for what, ema in (("ema per tensor", LoopEMA(model, 0.9999)), ("ema foreach (trainer)", EMA(model, 0.9999))):
            timed[what] = fastest(lambda e=ema, m=model: e.update(m), dev, args.repeats)
        for what, ms in timed.items():
            base = timed[what.split(" ")[0] + (" loop" if what.startswith("rmsprop") else " per tensor")]
            print(f"| {name} | {what} | {ms:.1f} | {base / ms:.2f}x |")
            rows.append({"model": name, "what": what, "ms": ms, "speedup": base / ms})
        del model
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(dev), "torch": torch.__version__, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
