import os
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

import inceptionv4 as iv

# `make test` runs two pytest processes (pytest-xdist) on the two cores, one thread each: the
# per-test tensors are small, and two processes use two cores better than two threads of one
torch.set_num_threads(1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 2)

# the engines' builds (ONNX exports, OpenVINO blobs) of this run's throwaway weights go to a
# folder of its own, not the user's cache; subprocesses the tests start inherit it
os.environ["INCEPTIONV4_CACHE"] = tempfile.mkdtemp(prefix="inceptionv4-test-cache-")

ALL_MODELS = iv.list_models()


@pytest.fixture(params=ALL_MODELS)
def model_name(request) -> str:
    return request.param


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so eval-mode comparisons mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def eval_model(name: str, classes: int = 10) -> torch.nn.Module:
    """A seeded network in eval mode with random BatchNorm statistics: the reference the inference forms must equal."""
    torch.manual_seed(0)
    return randomize_bn(iv.create_model(name, num_classes=classes)).eval()


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    """Inception-ResNet-v1 with three named classes at its 75-pixel minimum: fast end-to-end inference."""
    torch.manual_seed(0)
    model = randomize_bn(iv.create_model("inception_resnet_v1", num_classes=3)).eval()
    model.class_names = ["red", "green", "blue"]
    model.pretrained_cfg = model.pretrained_cfg.at_input_size(75)
    return model


def torch_session(models, crops: int = 1, **options):
    """Networks in memory as a torch session of ``crops`` views per image, run where they are."""
    from inceptionv4.engines.open import open_session

    return open_session(models, backend="torch", crops=crops, **options)


def colour_folders(root, per_class: int, shape: tuple[int, int], noise: float) -> None:
    """Class folders named as small_model's classes (red, green, blue), ``per_class`` noisy PNGs
    of ``shape`` (height, width) each, the same pixels for the same arguments."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, colour in (("red", (220, 30, 30)), ("green", (30, 220, 30)), ("blue", (30, 30, 220))):
        (root / c).mkdir()
        for i in range(per_class):
            px = np.clip(np.array(colour) + rng.normal(0, noise, (*shape, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / c / f"{i}.png")


def int8_onnx(model, folder):
    """``model`` saved as ``folder/fp32.safetensors`` and quantized by onnxruntime (calibrated on
    colour folders, any agreement) to ``folder/q.onnx``: (fp32 weights, artefact)."""
    from inceptionv4.engines.quantize import quantize

    (folder / "calib").mkdir()
    colour_folders(folder / "calib", 3, (80, 96), 25)
    weights = folder / "fp32.safetensors"
    iv.save_weights(model, weights)
    quantize(weights, folder / "calib", folder / "q.onnx", backend="onnxruntime", min_agreement=0.0)
    return weights, folder / "q.onnx"


def noisy_pngs(root, n: int, seed: int) -> list:
    """``n`` distinct PNG files of noise in ``root``, sizes around small_model's 75 px (the i-th
    is (80 + 7i) x (100 - 3i)), the same pixels for the same seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        paths.append(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (80 + 7 * i, 100 - 3 * i, 3), dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    colour_folders(root, 2, (90, 120), 20)
    (root / "blue" / "corrupt.jpg").write_bytes(b"\xff\xd8\xffnot really")
    return root


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """red/green/blue JPEGs (smooth colours, odd sizes), one PNG, a truncated JPEG and a non-image."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(5)
    for c, (r, g, b) in (("red", (200, 40, 40)), ("green", (40, 200, 40)), ("blue", (40, 40, 200))):
        (root / c).mkdir()
        for i in range(2):
            base = np.clip(np.array((r, g, b)) + rng.normal(0, 40, (11, 13, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(base).resize((101 + 9 * i, 83 + 5 * i), Image.BICUBIC).save(
                root / c / f"{i}.jpg", quality=92
            )
    Image.open(root / "red" / "0.jpg").save(root / "green" / "as.png")
    (root / "blue" / "cut.jpg").write_bytes((root / "blue" / "0.jpg").read_bytes()[:300])
    (root / "blue" / "corrupt.jpg").write_bytes(b"\xff\xd8\xffnot really")
    return root


def payloads_failing_on(name):
    """decode_payloads, with the file called ``name`` failing as an unreadable JPEG would."""
    from inceptionv4.data.device_decode import pixels_of

    def decode(payloads, names, device):
        return [f"{n}: no decoder read it" if n.endswith(name) else pixels_of(Image.open(n).convert("RGB"))
                for p, n in zip(payloads, names, strict=True)]  # fmt: skip

    return decode



#: the extras `make demo` installs (Makefile's DEMO_STAMP): what a README block may rely on
DEMO_EXTRAS = ("export", "openvino", "serve", "explain")  # the Makefile's demo install


def _test_only_modules() -> set[str]:
    """Top-level modules of the distributions the test extra adds beyond the package and the demo's
    extras (timm, keras, tensorflow, ...): what a user who ran `make demo` does not have."""
    import importlib.metadata as md
    import re

    def names(extra: str | None) -> set[str]:
        out = set()
        for req in md.requires("inceptionv4") or []:
            marker = re.search(r'extra\s*==\s*"([^"]+)"', req)
            if (marker.group(1) if marker else None) == extra:
                out.add(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-"))
        return out

    def closure(dists: set[str]) -> set[str]:  # with everything they install in turn
        seen, todo = set(), list(dists)
        while todo:
            dist = todo.pop()
            if dist in seen:
                continue
            seen.add(dist)
            try:
                reqs = md.requires(dist) or []
            except md.PackageNotFoundError:
                continue
            todo += [re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs
                     if "extra ==" not in r]  # fmt: skip
        return seen

    demo = closure(names(None).union(*(names(e) for e in DEMO_EXTRAS)))
    only = names("test") - demo - {"pytest", "pytest-xdist"}
    return {module for module, dists in md.packages_distributions().items()
            if any(d.lower().replace("_", "-") in only for d in dists) and module.isidentifier()}  # fmt: skip


class _Refuse:
    """A meta path finder that makes the named top-level modules unimportable, as if not installed."""

    def __init__(self, modules: set[str]) -> None:
        self.modules = modules

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.modules:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the `make demo` environment)", name=name)
        return None


@pytest.fixture
def demo_environment():
    """Within the test, the modules only the test extra installs cannot be imported (those already
    imported are hidden, and put back after): a README block run here runs as after `make demo`."""
    import sys

    blocked = _test_only_modules()
    assert {"timm", "keras"} <= blocked
    # torch's own wrapper of a blocked package, imported earlier in this process, would still reach it
    wrappers = ("torch.utils.tensorboard",)
    hidden = {k: sys.modules.pop(k) for k in list(sys.modules)
              if k.split(".")[0] in blocked or k.startswith(wrappers)}  # fmt: skip
    finder = _Refuse(blocked)
    sys.meta_path.insert(0, finder)
    try:
        yield blocked
    finally:
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k.split(".")[0] in blocked or k.startswith(wrappers)]:
            del sys.modules[k]
        sys.modules.update(hidden)
