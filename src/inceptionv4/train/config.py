"""Training configuration: a typed dataclass; YAML overrides defaults, flags override YAML."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..models import list_models
from ..models.preprocessing import MAX_INPUT_SIZE
from ..precision import TORCH_DTYPES
from ..settings import (COUNT, COUNT_OR_ZERO, FRACTION, INTEGER, NON_NEGATIVE, POSITIVE, PROBABILITY, SHARE, Range,
                        check_fields, check_value, setting)
from .optim import OPTIMIZERS, SCHEDULES

log = logging.getLogger(__name__)


@dataclass
class Recipe:
    """The optimisation a preset stands for; TrainConfig's unset fields take these values."""

    optimizer: str
    lr: float  # at ``lr_batch`` images per step; scaled linearly with the global batch
    lr_batch: int
    schedule: str
    weight_decay: float
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    clip_grad: float | None = None
    ema_decay: float | None = None
    momentum: float = 0.9


#: The paper's recipe (Sec. 4) and two others. The paper states no batch size: its 0.045 is taken
#: here to be for a global batch of 256 and scaled linearly from there (docs/training.md).
RECIPES = {
    "paper": Recipe("rmsprop_tf", 0.045, 256, "exponential", 4e-5, clip_grad=2.0, ema_decay=0.9999),
    "finetune": Recipe("sgd", 0.01, 256, "cosine", 1e-4, warmup_epochs=1.0, label_smoothing=0.1),
    "modern": Recipe(
        "adamw", 1e-3, 512, "cosine", 0.05, warmup_epochs=5.0, label_smoothing=0.1, clip_grad=1.0, ema_decay=0.9998
    ),
}




#: The dataset kinds a run takes: those of ``data.build_dataset`` (``data.build.DATASET_KINDS``,
#: equal by test), written here so that reading the settings (``--help``) does not load the data
#: pipeline (torchvision).
DATASET_KINDS = ("digits", "synthetic", "folder", "list", "wds", "hf")


#: What training's autocast runs: the inference precisions a forward pass under autocast has.
TRAIN_PRECISIONS = tuple(TORCH_DTYPES)
#: ``amp``, the setting ``precision`` replaces, and what each of its words is now
_AMP_WORDS = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}


def _renamed_amp(values: dict) -> None:
    """``amp`` (a config file, a keyword, ``--amp``) read as ``precision``, with a deprecation
    notice: "none" is "fp32". Both at once is an error, as the inference commands say it."""
    if "amp" not in values:
        return
    amp = values.pop("amp")
    if "precision" in values:
        raise ValueError("give precision or the deprecated amp, not both")
    if amp not in _AMP_WORDS:
        raise ValueError(f"amp must be one of {', '.join(_AMP_WORDS)}; got {amp!r} (amp is deprecated: use precision)")
    warnings.warn(f"amp is deprecated: use precision {_AMP_WORDS[amp]} (--precision {_AMP_WORDS[amp]})",
                  DeprecationWarning, stacklevel=3)  # fmt: skip
    log.warning("amp is deprecated: use --precision %s", _AMP_WORDS[amp])
    values["precision"] = _AMP_WORDS[amp]


#: What a run's config.yaml records beside its settings (:class:`ResolvedConfig`'s own fields):
#: derived from them, so read back, they are dropped.
RECORDED = ("momentum", "started_from")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of :func:`inceptionv4.train.train`; ``None`` means "the recipe's value"."""

    # what to train
    model: str = setting("inception_resnet_v1", "the network (see `inceptionv4 list`)")
    pretrained: str | None = setting(
        None,
        "a hub id or weights file to start from; another class count gets a fresh head",
    )
    from_scratch: bool = setting(
        False,
        "start from random weights on purpose (the finetune recipe otherwise requires --pretrained)",
    )
    drop_rate: float = setting(
        0.2,
        "dropout before the classifier (the paper's keep 0.8 is 0.2)",
        range=FRACTION,
    )
    residual_scale: float | None = setting(
        None,
        "scale of the Inception-ResNet residual branches (the network's own if unset)",
    )
    # data
    dataset: str | None = setting(
        None,
        f"{' | '.join(DATASET_KINDS)}; unset: folder or list from --data, else digits",
    )
    data: str | None = setting(
        None,
        "the folder (train/ and val/, or class folders), the training list file, the training shards "
        "(wds: 'shards/train-{000000..000146}.tar') or a saved Hugging Face dataset (hf)",
    )
    val_data: str | None = setting(
        None,
        "the validation list file (list), shards (wds) or saved dataset (hf; unset: its validation split)",
    )
    shuffle_buffer: int = setting(
        1000,
        "wds: samples in each stream's shuffle buffer",
        range=COUNT,
    )
    image_column: str | None = setting(
        None,
        "hf: the image column (unset: the one of Image type, else 'image' or 'img')",
    )
    label_column: str | None = setting(
        None,
        "hf: the label column (unset: the one of ClassLabel type, else 'label' or 'labels')",
    )
    input_size: int = setting(
        299,
        "training and evaluation resolution in pixels",
        range=Range(lambda v: 1 <= v <= MAX_INPUT_SIZE, f"an integer of 1-{MAX_INPUT_SIZE}", integer=True),
    )
    hflip: float = setting(
        0.5,
        "probability of a horizontal flip",
        range=PROBABILITY,
    )
    color_jitter: float = setting(
        0.0,
        "strength of brightness/contrast/saturation jitter (0: off)",
        range=NON_NEGATIVE,
    )
    min_crop_area: float = setting(
        0.08,
        "smallest area of the random-resized crop, as a fraction of the image",
        range=SHARE,
    )
    device: str = setting(
        "auto",
        "where it trains, as eval/predict/serve take it: auto (a GPU if PyTorch sees one, else the CPU), cpu, cuda, "
        "cuda:N, mps; under torchrun each process takes the GPU of its LOCAL_RANK",
    )
    workers: int = setting(2, "data-loading processes per GPU/process", range=COUNT_OR_ZERO)
    decode: str = setting(
        "workers",
        "where JPEGs are decoded and augmented, and validated (device: batched nvJPEG on CUDA)",
        choices=("workers", "device"),
    )
    # optimisation
    recipe: str = setting("paper", "paper | finetune | modern: optimizer, rate, schedule and regularisation presets")
    epochs: int = setting(10, "passes over the training set", range=COUNT)
    batch_size: int = setting(
        32,
        "global batch: across processes and accumulation steps",
        range=COUNT,
    )
    accum_steps: int = setting(
        1,
        "gradient accumulation steps per optimizer step",
        range=COUNT,
    )
    lr: float | None = setting(
        None,
        "learning rate (the recipe's, scaled with the batch, if unset)",
        range=POSITIVE,
    )
    optimizer: str | None = setting(None, "rmsprop_tf | sgd | adamw (the recipe's if unset)")
    schedule: str | None = setting(None, "exponential | cosine | constant (the recipe's if unset)")
    weight_decay: float | None = setting(
        None,
        "weight decay (the recipe's if unset)",
        range=NON_NEGATIVE,
    )
    warmup_epochs: float | None = setting(
        None,
        "linear warm-up, in epochs (the recipe's if unset)",
        range=NON_NEGATIVE,
    )
    label_smoothing: float | None = setting(
        None,
        "label smoothing (the recipe's if unset)",
        range=FRACTION,
    )
    clip_grad: float | None = setting(
        None,
        "clip the gradient norm to this (0: off; the recipe's if unset)",
        range=NON_NEGATIVE.or_unset(),
    )
    ema_decay: float | None = setting(
        None,
        "exponential moving average of the weights (0: off; the recipe's if unset)",
        range=FRACTION.or_unset(),
    )
    aux_weight: float = setting(
        0.0,
        "> 0 adds the auxiliary classifier, its loss times this (0.4 in TF-slim)",
        range=NON_NEGATIVE,
    )
    freeze_backbone: bool = setting(False, "train the classifier only")
    freeze_bn: bool = setting(False, "keep batch-norm running statistics as loaded (small batches, fine-tuning)")
    # speed
    precision: str = setting(
        "fp32",
        "the forward pass's autocast precision (fp16 with a grad scaler); the same word as the "
        "inference commands' --precision",
        choices=TRAIN_PRECISIONS,
    )
    channels_last: bool = setting(False, "NHWC memory format (faster convolutions on recent GPUs and CPUs)")
    compile: bool = setting(False, "torch.compile the training step")
    grad_checkpointing: bool = setting(
        False,
        "recompute each block's activations in the backward pass: less memory, more compute",
    )
    sync_bn: bool = setting(False, "synchronise batch-norm statistics across GPUs (CUDA only)")
    # bookkeeping
    out_dir: str = setting("runs/exp", "the run folder: checkpoints, metrics, plots, the final weights")
    seed: int = setting(
        0,
        "seed of initialisation, data order and augmentation",
        range=INTEGER,
    )
    deterministic: bool = setting(False, "deterministic algorithms only (slower)")
    resume: bool = setting(False, "continue from the newest checkpoint in out_dir")
    overwrite: bool = setting(False, "replace a run already checkpointed in out_dir")
    save_every: int = setting(
        0,
        "also checkpoint every N optimizer steps (0: at epoch ends only)",
        range=COUNT_OR_ZERO,
    )
    keep_checkpoints: int = setting(
        1,
        "how many of the newest checkpoints stay on disk",
        range=COUNT,
    )
    max_steps: int | None = setting(
        None,
        "stop after this many optimizer steps",
        range=COUNT.or_unset(),
    )
    nan_policy: str = setting("stop", "what a NaN or infinite loss does", choices=("stop", "skip"))
    max_unreadable: float = setting(
        0.1,
        "stop when more than this share of an epoch's training images, or a whole batch, cannot be "
        "read (1: never stop for it)",
        range=PROBABILITY,
    )
    log_every: int = setting(10, "log the training loss every N steps", range=COUNT)
    progress: bool = setting(True, "a progress bar")
    plots: bool = setting(True, "loss, accuracy, learning-rate and confusion plots in out_dir")


    def __post_init__(self) -> None:
        # `--data ./photos` alone means "train on my folder", never the bundled digits: the kind is
        # taken from what `data` is, and only an explicit `dataset` overrides that.
        if self.dataset is None:
            kind = "digits" if self.data is None else "list" if Path(self.data).is_file() else "folder"
            object.__setattr__(self, "dataset", kind)

    def resolved(self) -> ResolvedConfig:
        """This config with the recipe's values filled in where it says None: what a run reads."""
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; known: {', '.join(RECIPES)}")
        r = RECIPES[self.recipe]
        own = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("optimizer", "schedule", "weight_decay", "warmup_epochs", "label_smoothing", "clip_grad",
                    "ema_decay"):  # fmt: skip
            if own[key] is None:
                own[key] = getattr(r, key)
        if own["lr"] is None:
            own["lr"] = r.lr * self.batch_size / r.lr_batch
        return ResolvedConfig(**own, momentum=r.momentum)

    def validate(self) -> None:
        """Every setting checked here, so a bad one stops the run before a network or worker exists."""
        if self.model not in list_models():
            raise ValueError(f"unknown model {self.model!r}; known models: {', '.join(list_models())}")
        check_fields(self, [f.name for f in fields(self) if f.metadata["choices"]])
        if not str(self.out_dir).strip():  # "" would be the working folder, checkpoints among the user's files
            raise ValueError("out_dir is empty: give the run folder (--out-dir runs/NAME)")
        if self.recipe == "finetune" and self.pretrained is None and not self.from_scratch:
            raise ValueError("the finetune recipe starts from trained weights: give --pretrained (a hub id or a "
                             "weights file), or --from-scratch to train from random weights on purpose")  # fmt: skip
        if self.from_scratch and self.pretrained is not None:
            raise ValueError(f"--from-scratch and --pretrained {self.pretrained} contradict each other: give one")
        from ..devices import resolve_device

        resolve_device(self.device)  # a device this machine lacks is said now, before any data is read
        self._validate_data()
        integers = [f.name for f in fields(self) if f.metadata["range"] is not None and f.metadata["range"].integer]
        check_fields(self, integers)  # before resolved() computes with batch_size
        r = self.resolved()
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(r, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(r, name)!r}; known: {', '.join(allowed)}")
        for f in fields(self):
            if f.metadata["range"] is not None and f.name not in integers:
                check_value(f.name, getattr(r, f.name), range=f.metadata["range"])

    @staticmethod
    def check_setting(name: str, value: object) -> None:
        """ValueError if ``value`` breaks ``name``'s range or choices: the rule the CLI applies to
        each flag while parsing and :meth:`validate` to the whole config."""
        f = _FIELDS[name]
        check_value(name, value, range=f.metadata["range"], choices=f.metadata["choices"])

    def _validate_data(self) -> None:
        """Say what is wrong with the data settings before a network is built or a worker started."""
        if self.dataset not in DATASET_KINDS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASET_KINDS)}")
        if self.dataset in ("digits", "synthetic"):
            for name in ("data", "val_data"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} ({getattr(self, name)}) is read only with datasets folder, list, wds and hf, "
                        f"not {self.dataset!r}; leave dataset unset to take the kind from {name}"
                    )
            return
        if self.dataset in ("wds", "hf"):
            if self.data is None:
                what = "a shard pattern such as 'shards/train-{000000..000146}.tar'" if self.dataset == "wds" else (
                    "a dataset folder written by save_to_disk, or parquet files")  # fmt: skip
                raise ValueError(f"dataset {self.dataset!r} needs data: {what}")
            if self.dataset == "wds" and self.val_data is None:
                raise ValueError("dataset 'wds' needs val_data: the validation shards")
            return
        if self.data is None:
            what = "a folder of class folders (or train/ and val/)" if self.dataset == "folder" else "a list file"
            raise ValueError(f"dataset {self.dataset!r} needs data: {what}")
        data = Path(self.data)
        if self.dataset == "folder" and not data.is_dir():
            raise FileNotFoundError(
                f"no such data folder: {data}" + (" (a file: use dataset 'list')" if data.is_file() else "")
            )
        if self.dataset == "list":
            if not data.is_file():
                raise FileNotFoundError(f"no such list file: {data}")
            if self.val_data is None:
                raise ValueError("dataset 'list' needs val_data: the list file of the validation images")
            if not Path(self.val_data).is_file():
                raise FileNotFoundError(f"no such validation list file: {self.val_data}")
        elif self.val_data is not None:
            raise ValueError("val_data is read only with dataset 'list'; a folder's validation images are in its val/")

    @classmethod
    def from_sources(cls, yaml_path: str | Path | None = None, **overrides) -> TrainConfig:
        """Defaults <- YAML file <- keyword overrides (None values in overrides are ignored)."""
        values: dict = {}
        if yaml_path is not None:
            path = Path(yaml_path)
            if not path.is_file():
                raise FileNotFoundError(f"no such config file: {path}")
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"config file {path} is not text (YAML settings); is it the right file?") from None
            except yaml.YAMLError as err:
                where = getattr(err, "problem_mark", None)
                at = f" at line {where.line + 1}" if where is not None else ""
                raise ValueError(f"config file {path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
            if loaded is None:  # an empty file would silently start a default run
                raise ValueError(f"config file {path} is empty: give it settings (e.g. 'epochs: 5'), or drop --config")
            if not isinstance(loaded, dict):
                raise ValueError(f"config file {path} must hold a mapping of settings, got {type(loaded).__name__}")
            values.update(loaded)
        for key in RECORDED:  # a run's own config.yaml may be given again
            values.pop(key, None)
        values.update({k: v for k, v in overrides.items() if v is not None})
        _renamed_amp(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {', '.join(sorted(known))}")
        cfg = cls(**values)
        cfg.validate()
        return cfg


@dataclass(frozen=True)
class ResolvedConfig(TrainConfig):
    """A run's settings as the trainer reads them: every recipe value filled in (``lr`` scaled to
    the batch, ``optimizer``, ``schedule``, ...), and what the run derives: the recipe's
    ``momentum``, and ``started_from`` (what the weights were before training) once set up."""

    momentum: float = 0.9
    started_from: str | None = None

    def as_dict(self) -> dict:
        """The settings by name: what config.yaml and each checkpoint record."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Each setting's record (help, range, choices), read by the CLI and the checks.
_FIELDS = {f.name: f for f in fields(TrainConfig)}
FIELD_HELP = {name: f.metadata["help"] for name, f in _FIELDS.items()}
