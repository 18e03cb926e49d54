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
from ..distributed import World, gather_objects
from .session import Labels, Session, as_session

def label_map(dataset_classes: list[str], outputs: Session | torch.nn.Module | list[str]) -> list[int]:
    """Output index of each dataset class, for a session, a network, or the outputs' class keys
    (:class:`~inceptionv4.infer.session.Labels`): by name (ImageNet folders by WordNet id), else
    by position: classes named 0, 1, ... (a list file's integer labels) are output indices, and
    unnamed classes as many as the outputs are in the outputs' order."""
    keys = outputs if isinstance(outputs, list) else outputs.labels.keys if isinstance(outputs, Session) \
        else Labels.of_model(outputs).keys  # fmt: skip
    index = {k: i for i, k in enumerate(keys)}
    if all(c in index for c in dataset_classes):
        return [index[c] for c in dataset_classes]
    numbered = dataset_classes == [str(i) for i in range(len(dataset_classes))]
    if len(dataset_classes) == len(keys) or (numbered and len(dataset_classes) <= len(keys)):
        return list(range(len(dataset_classes)))  # folder order, or integer labels, is the class order
    missing = [c for c in dataset_classes if c not in index][:5]
    raise ValueError(
        f"the dataset's {len(dataset_classes)} classes do not match the model's {len(keys)} outputs "
        f"(e.g. {missing} are not among them)"
    )


#: the confusion matrix's last column: predictions of a class the dataset does not have (a
#: 1000-class ImageNet network on a folder of 10 of its classes can still answer any of the 1000)
OUTSIDE = "(a class outside the dataset)"


class Tally:
    """The one metrics accumulator: of ``eval`` and of training's validation alike.

    It takes probabilities over the outputs, each image's dataset label and index, and the images
    that could not be read, and gives the report's figures: top-1, top-5, the mean negative log
    likelihood (``loss``), per-class top-1, and the confusion matrix of ``n x (n + 1)`` (rows:
    true class; columns: predicted class, the last one for an output outside the dataset's
    classes, :data:`OUTSIDE`). ``mapping[c]`` is the output index of dataset class ``c``
    (:func:`label_map`); ``keys`` name the outputs.
    """

    def __init__(self, classes: list[str], mapping: list[int], keys: list[str], name_of=None) -> None:
        self.classes, self.mapping, self.keys, self.name_of = list(classes), list(mapping), list(keys), name_of
        n = len(classes)
        # output index -> confusion column: its dataset class, else the OUTSIDE column
        self.column = torch.full((max(len(keys), max(mapping, default=-1) + 1),), n, dtype=torch.long)
        self.column[torch.tensor(self.mapping, dtype=torch.long)] = torch.arange(n)
        self.confusion = torch.zeros(n, n + 1, dtype=torch.long)
        self.top5, self.nll = 0, 0.0
        self.images: list[tuple[int, dict]] = []  # (dataset index, entry): shares merge in order
        self.skipped: list[tuple[int, str]] = []

    def add(self, probs: torch.Tensor, labels: list[int], indices: list[int]) -> None:
        """``probs`` (N, outputs) of N images with these dataset ``labels`` and ``indices``."""
        probs = probs.detach().float().cpu()
        target = torch.tensor([self.mapping[y] for y in labels])
        k = min(5, probs.shape[1])
        self.top5 += (probs.topk(k, 1).indices == target[:, None]).any(1).sum().item()
        self.nll -= probs.gather(1, target[:, None]).clamp(min=1e-12).log().sum().item()
        best, predicted = probs.max(1)
        rows = torch.tensor(labels, dtype=torch.long)
        self.confusion.index_put_((rows, self.column[predicted]), torch.ones_like(rows), accumulate=True)
        if self.name_of is not None:
            for i, y, p, prob in zip(indices, labels, predicted.tolist(), best.tolist(), strict=True):
                entry = {"file": self.name_of(i), "label": self.classes[y], "predicted": self.keys[p], "prob": prob}
                self.images.append((int(i), entry))

    def skip(self, indices: list[int], reasons: list[str]) -> None:
        """Images that could not be read: counted in the report's ``skipped``, not in ``n``."""
        self.skipped += zip((int(i) for i in indices), reasons, strict=True)

    def merge(self, world: World) -> None:
        """Every process's share, in every process: the same report everywhere."""
        if not world.distributed:
            return
        shares = gather_objects((self.confusion, self.top5, self.nll, self.images, self.skipped), world)
        self.confusion = sum((s[0] for s in shares), torch.zeros_like(self.confusion))
        self.top5, self.nll = sum(s[1] for s in shares), sum(s[2] for s in shares)
        self.images = sorted((x for s in shares for x in s[3]), key=lambda x: x[0])
        self.skipped = sorted((x for s in shares for x in s[4]), key=lambda x: x[0])

    def report(self) -> dict:
        """The figures so far (of this process's share, unless :meth:`merge` ran): percentages,
        the mean loss, and the confusion as nested lists; JSON-ready."""
        n = int(self.confusion.sum())
        per_class = self.confusion.diag().double() / self.confusion.sum(1).clamp(min=1)
        return {
            "n": n,
            "top1": 100.0 * self.confusion.diag().sum().item() / max(n, 1),
            "top5": 100.0 * self.top5 / max(n, 1),
            "loss": self.nll / max(n, 1),
            "per_class_top1": {c: 100.0 * a for c, a in zip(self.classes, per_class.tolist(), strict=True)},
            "confusion": self.confusion.tolist(),  # n x (n + 1): rows true, columns predicted
            "confusion_columns": [*self.classes, OUTSIDE],
            "classes": list(self.classes),
            "images": [entry for _, entry in self.images],
            "skipped": [reason for _, reason in self.skipped],
        }


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
    models; see :func:`~inceptionv4.infer.session.open_session`) on a dataset of
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
