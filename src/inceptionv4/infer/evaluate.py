"""Evaluation with the paper's protocols (1, 10, 12, 144 crops; see :mod:`inceptionv4.data.views`)
and ensembles: a session over a labelled dataset -> top-1/top-5, per-class accuracy, confusion.

Softmax probabilities are averaged over crops, then over the models of an ensemble (the session
does both).
"""

from __future__ import annotations

import math

import torch

from ..data.loaders import protocol_batches
from ..data.views import check_decode, scales_for
from ..distributed import World
from ..scoring import OUTSIDE, Tally, map_labels  # noqa: F401 (OUTSIDE: read from here too)
from ..engines.open import as_session
from ..engines.session import Labels, Session

def label_map(dataset_classes: list[str], outputs: Session | torch.nn.Module | list[str]) -> list[int]:
    """Output index of each dataset class, for a session, a network, or the outputs' class keys
    (:class:`~inceptionv4.engines.session.Labels`): :func:`~inceptionv4.scoring.map_labels` of their keys."""
    keys = outputs if isinstance(outputs, list) else outputs.labels.keys if isinstance(outputs, Session) \
        else Labels.of_model(outputs).keys  # fmt: skip
    return map_labels(dataset_classes, keys)


def evaluate_protocol(
    session: Session | torch.nn.Module | list[torch.nn.Module],
    dataset,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    workers: int = 0,
    decode: str = "workers",
    world: World | None = None,
) -> dict:
    """Top-1/top-5, per-class accuracy and confusion of a session (an ensemble if it holds several
    models; see :func:`~inceptionv4.engines.open.open_session`) on a dataset of
    :mod:`inceptionv4.data`, with the session's crop protocol. ``images`` lists each image's file,
    label, predicted class and its probability, for error analysis. Unreadable files are skipped
    and listed. Networks in memory are taken as a 1-crop torch session, run where they are.

    ``batch_size`` images are gathered at a time (default: the fewest whose views fill whole
    passes of the session). The images go through the one batch path
    (:func:`~inceptionv4.data.loaders.protocol_batches`): threads of this process (``workers=0``)
    or ``workers`` loader processes decode and resample them while the engine runs; the pictures
    travel as uint8, and the crops, mirrors and normalisation are made on the session's device
    (:class:`~inceptionv4.data.views.ProtocolPieces`). The result does not depend on ``workers``
    or ``batch_size``. A JPEG much larger than the protocol needs is decoded reduced unless the
    session was opened with ``full_decode`` (ImageNet's validation images are not large enough
    to be).

    ``decode="device"`` leaves the workers only reading files: the JPEGs are decoded on the
    session's device (nvJPEG on a GPU) and resampled there (:class:`~inceptionv4.data.views.DeviceViews`)
    -- for a GPU that evaluates faster than the workers decode. Its pixels differ from PIL's by a
    level or two.

    Under torchrun, pass ``world`` (:func:`~inceptionv4.distributed.init_distributed`):
    each process evaluates every ``world.size``-th image, and every process returns the whole
    dataset's report, identical to a single process's.
    """
    if (batch_size is not None and batch_size < 1) or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size}, {workers}")
    check_decode(decode)
    session = as_session(session)
    crops, pre = session.crops, session.pre
    mapping = label_map(dataset.classes, session.labels.keys)
    world = world or World()
    device = session.device  # where the views are cut
    chunk = session.chunk
    batch_size = batch_size or chunk // math.gcd(chunk, crops)  # views that fill whole passes
    shard = range(world.rank, len(dataset), world.size)  # this process's images
    batches = protocol_batches(dataset, pre, crops, device, batch_size=batch_size, decode=decode,
                               reduce_to=session.reduce_to, workers=workers, order=shard)  # fmt: skip
    tally = Tally(dataset.classes, mapping, session.labels.keys, name_of=dataset.name_of)
    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(shard), desc=f"eval ({crops} crop{'s' if crops > 1 else ''})", unit="img")
    for batch in batches:
        tally.skip(batch["skipped_indices"], batch["skipped"])
        if batch["images"] is not None:  # (B*V, 3, S, S): uint8 pixels, or normalised floats
            tally.add(session(batch["images"]), [int(y) for y in batch["labels"]], [int(i) for i in batch["indices"]])
        if bar is not None:
            bar.update(len(batch["skipped"]) + len(batch["labels"]))
    if bar is not None:
        bar.close()
    tally.merge(world)
    report = tally.report()
    if report["n"] == 0:  # a 0% top-1 over nothing would read as a result
        skipped = report["skipped"]
        shown = "; ".join(skipped[:3]) + (f"; ... {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise ValueError(f"no image of the {len(dataset)} in the dataset could be read: {shown or 'none found'}")
    return {
        "crops": crops,
        "scales": scales_for(pre, crops),
        "models": len(session.runners),
        "device": str(device),
        "processes": world.size,
        "backend": session.backend,
        "precision": session.precision,
        "decode": decode,
        "decode_size": session.decode_size,
        **report,
    }
