"""Evaluation with the paper's protocols (1, 10, 12, 144 crops; see :mod:`inceptionv4.data.views`)
and ensembles: a session over a labelled dataset -> top-1/top-5, per-class accuracy, confusion.

Softmax probabilities are averaged over crops, then over the models of an ensemble (the session
does both).
"""

from __future__ import annotations

import math

import torch

from ..data.views import DeviceViews, EncodedFiles, ProtocolViews, check_decode, collate_items, cut_batch, scales_for
from ..engine.distributed import World, gather_objects
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
    passes of the session). ``workers`` loader processes decode and resample the images in
    parallel (0: in this process); the pictures travel as uint8, and the crops, mirrors and
    normalisation are made on the session's device (:class:`~inceptionv4.data.views.ProtocolPieces`).
    The result does not depend on ``workers`` or ``batch_size``.

    ``decode="device"`` leaves the workers only reading files: the JPEGs are decoded on the
    session's device (nvJPEG on a GPU) and resampled there (:class:`~inceptionv4.data.views.DeviceViews`)
    -- for a GPU that evaluates faster than the workers decode. Its pixels differ from PIL's by a
    level or two.

    Under torchrun, pass ``world`` (:func:`~inceptionv4.engine.distributed.init_distributed`):
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
    on_gpu = device.type == "cuda"
    chunk = session.chunk
    batch_size = batch_size or chunk // math.gcd(chunk, crops)  # views that fill whole passes
    shard = range(world.rank, len(dataset), world.size)  # this process's images
    loading = {"batch_size": batch_size, "num_workers": workers, "sampler": shard, "pin_memory": on_gpu}
    if decode == "device":
        loader = torch.utils.data.DataLoader(EncodedFiles(dataset), collate_fn=collate_items, **loading)
        batches = map(DeviceViews(pre, crops, device), loader)
    else:
        loader = torch.utils.data.DataLoader(ProtocolViews(dataset, pre, crops), collate_fn=collate_items, **loading)
        batches = (dict(b, images=cut_batch(b["data"], device)) for b in loader)
    back = {model_idx: ds_idx for ds_idx, model_idx in enumerate(mapping)}
    keys = session.labels.keys
    n_cls = len(dataset.classes)
    images: list[tuple[int, dict]] = []  # (dataset index, entry): the processes' shares are merged in order
    confusion = torch.zeros(n_cls, n_cls + 1, dtype=torch.long)  # last column: a class outside the dataset
    top5 = 0
    skipped: list[tuple[int, str]] = []
    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(shard), desc=f"eval ({crops} crop{'s' if crops > 1 else ''})", unit="img")
    for batch in batches:
        skipped += zip(batch["skipped_indices"], batch["skipped"], strict=True)
        if batch["images"] is not None:  # (B*V, 3, S, S): uint8 pixels, or normalised floats
            probs = session(batch["images"])
            dataset_labels = [int(y) for y in batch["labels"]]
            labels = torch.tensor([mapping[y] for y in dataset_labels])
            k = min(5, probs.shape[1])
            top5 += (probs.topk(k, 1).indices == labels[:, None]).any(1).sum().item()
            best, predicted = probs.max(1)
            for i, y, p, prob in zip(batch["indices"], dataset_labels, predicted.tolist(), best.tolist(),
                                     strict=True):  # fmt: skip
                confusion[y, back.get(p, n_cls)] += 1
                entry = {"file": dataset.name_of(i), "label": dataset.classes[y], "predicted": keys[p], "prob": prob}
                images.append((i, entry))
        if bar is not None:
            bar.update(len(batch["skipped"]) + len(batch["labels"]))
    if bar is not None:
        bar.close()
    if world.distributed:  # every process gets every share: the same report everywhere
        shares = gather_objects((confusion, top5, images, skipped), world)
        confusion = sum((c for c, _, _, _ in shares), torch.zeros_like(confusion))
        top5 = sum(t for _, t, _, _ in shares)
        images = sorted((x for _, _, i, _ in shares for x in i), key=lambda x: x[0])
        skipped = sorted((x for _, _, _, k in shares for x in k), key=lambda x: x[0])
    skipped = [reason for _, reason in skipped]
    n = int(confusion.sum())
    if n == 0:  # a 0% top-1 over nothing would read as a result
        shown = "; ".join(skipped[:3]) + (f"; ... {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise ValueError(f"no image of the {len(dataset)} in the dataset could be read: {shown or 'none found'}")
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1)
    return {
        "crops": crops,
        "scales": scales_for(pre, crops),
        "models": len(session.runners),
        "device": str(device),
        "processes": world.size,
        "backend": session.backend,
        "precision": session.precision,
        "decode": decode,
        "n": n,
        "top1": 100.0 * confusion.diag().sum().item() / max(n, 1),
        "top5": 100.0 * top5 / max(n, 1),
        "per_class_top1": {c: 100.0 * a for c, a in zip(dataset.classes, per_class.tolist(), strict=True)},
        "confusion": confusion.tolist(),  # n x (n + 1): rows true, columns predicted, see below
        "confusion_columns": [*dataset.classes, OUTSIDE],
        "classes": list(dataset.classes),
        "images": [entry for _, entry in images],
        "skipped": skipped,
    }

