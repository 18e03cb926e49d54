"""docs/architecture.md is the contract: every shape in its tables is what the networks produce."""

import re
from pathlib import Path

import pytest
import torch

import inceptionv4 as iv

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
ROW = re.compile(r"^\| `([\w.]+)` \| .* \| (\d+x\d+x\d+|\d+) \|$")


def documented_shapes() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    tables: dict[str, list] = {}
    current = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
        elif current in iv.list_models() and (m := ROW.match(line)):
            dims = tuple(int(d) for d in m.group(2).split("x"))
            tables.setdefault(current, []).append((m.group(1), dims))
    return tables


def test_every_model_is_documented():
    assert sorted(documented_shapes()) == iv.list_models()


@pytest.mark.parametrize("name", iv.list_models())
def test_stage_shapes_at_299_match_docs(name):
    rows = documented_shapes()[name]
    model = iv.create_model(name).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for module_name, _ in rows:
        module = model.get_submodule(module_name)
        if isinstance(module, torch.nn.Sequential):
            module = module[-1]  # a stage: its last block's output
        module.register_forward_hook(
            lambda _m, _i, out, key=module_name: seen.__setitem__(
                key, (out.shape[2], out.shape[3], out.shape[1]) if out.ndim == 4 else (out.shape[1],)
            )
        )
    with torch.no_grad():
        model(torch.randn(1, 3, 299, 299))
    assert {k: seen[k] for k, _ in rows} == dict(rows)
    assert len(rows) >= 10
