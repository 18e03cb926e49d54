"""Peak memory and time of decoding large images, each in a fresh process, against PIL's plain path.

    python benchmarks/decode_memory.py [--side 9000] [--json out.json]

For each image kind (a palette PNG with a transparent entry, a greyscale PNG, an RGBA PNG, an RGB
JPEG), ``--side`` pixels square, written to a temporary folder:

- **ours**: ``inceptionv4.data.decode.load_rgb``, as predict, eval, training and the server decode;
- **plain PIL**: open, load, ``ImageOps.exif_transpose``, then RGB with transparency composited on
  white through RGBA (``Image.alpha_composite``), what this package did before;
- **estimate**: ``decode_memory`` from the header, what the per-image limit and the server's
  decoding budget charge.

Peak memory is the growth of the process's resident set across the decode alone: its high-water
mark (VmHWM, restarted through /proc/self/clear_refs just before) less its size before (Linux).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from inceptionv4.data.decode import decode_memory
from inceptionv4.devices import vector_units

PROBE = """
import sys, time
from PIL import Image, ImageOps
path, how = sys.argv[1], sys.argv[2]
if how == "ours":
    from inceptionv4.data.decode import load_rgb
def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark restarts from here (Linux)
before = status("VmRSS:")
start = time.perf_counter()
if how == "ours":
    img = load_rgb(path)
else:
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("P", "RGBA", "LA", "PA"):
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
        img = img.convert("RGB")
took = time.perf_counter() - start
print(status("VmHWM:") - before, took, img.size[0])
"""


def make(folder: Path, side: int) -> dict[str, Path]:
    """The test images, ``side`` pixels square."""
    paths = {}
    palette = Image.new("P", (side, side), 1)
    palette.putpalette([255, 0, 0, 0, 128, 255] + [0] * 762)
    palette.paste(0, (0, 0, side // 2, side))
    paths["palette PNG, transparent entry"] = folder / "palette.png"
    palette.save(paths["palette PNG, transparent entry"], transparency=0)
    gray = Image.linear_gradient("L").resize((side, side))
    paths["greyscale PNG"] = folder / "gray.png"
    gray.save(paths["greyscale PNG"])
    paths["RGBA PNG"] = folder / "rgba.png"
    Image.merge("RGBA", (gray, gray, gray, gray)).save(paths["RGBA PNG"])
    paths["RGB JPEG"] = folder / "rgb.jpg"
    Image.merge("RGB", (gray, gray, gray)).save(paths["RGB JPEG"], quality=90)
    return paths


def measure(path: Path, how: str) -> tuple[int, float]:
    run = subprocess.run([sys.executable, "-c", PROBE, str(path), how], capture_output=True, text=True, check=True)
    grew, took, _ = run.stdout.split()
    return int(grew), float(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=9000, help="the images' side in pixels")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in make(Path(tmp), args.side).items():
            with Image.open(path) as img:
                estimate = decode_memory(*img.size, img.mode)
            ours, ours_s = measure(path, "ours")
            plain, plain_s = measure(path, "plain")
            rows.append({"kind": kind, "bytes_on_disk": path.stat().st_size, "estimate": estimate, "ours": ours,
                         "plain_pil": plain, "ours_s": ours_s, "plain_pil_s": plain_s})  # fmt: skip
    print(f"{args.side} x {args.side} pixels, {vector_units()}; peak memory of the decode in MB, time in s")
    print(f"{'image':<32}{'on disk':>10}{'estimate':>10}{'ours':>8}{'plain PIL':>11}{'ours s':>8}{'PIL s':>7}")
    for r in rows:
        print(f"{r['kind']:<32}{r['bytes_on_disk'] / 2**20:>9.2f}M{r['estimate'] / 2**20:>10.0f}{r['ours'] / 2**20:>8.0f}"
              f"{r['plain_pil'] / 2**20:>11.0f}{r['ours_s']:>8.2f}{r['plain_pil_s']:>7.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"side": args.side, "cpu": vector_units(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
