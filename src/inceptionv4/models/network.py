"""The one interface every network of this package shares (timm's contract, big_vision's taps).

A network is a stem followed by the six stages of Figs. 9 and 15 -- ``stage_a``, ``reduction_a``,
``stage_b``, ``reduction_b``, ``stage_c`` and ``post`` (the released Inception-ResNet-v2's 1x1
conv to 1536; an identity elsewhere) -- and a classifier head. The stem is a Sequential, so
feature taps at strides 2 and 4 can sit between its steps.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import AuxHead, ClassifierHead, EmbeddingHead

#: whether torch.fx's symbolic tracer is running (torch.compile and torch.export are not it)
_fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", torch.fx._symbolic_trace.is_fx_tracing)

STAGES = ("stage_a", "reduction_a", "stage_b", "reduction_b", "stage_c", "post")


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map a backbone can hand to a detector: where it is tapped, width, stride."""

    module: str
    num_chs: int
    reduction: int

    def to_dict(self) -> dict:
        return {"module": self.module, "num_chs": self.num_chs, "reduction": self.reduction}


class FeatureInfoList(list):
    """``feature_info``: the taps as a list (it iterates and indexes as one) with timm's
    ``FeatureInfo`` interface on top. ``channels()``, ``reduction()`` and ``module_name()`` give
    one value per tap in ``out_indices`` (every tap unless the model is a features_only
    backbone), or for tap ``idx``; ``get_dicts()`` gives them as timm's dicts."""

    def __init__(self, infos, out_indices: tuple[int, ...] | None = None) -> None:
        super().__init__(infos)
        self.out_indices = tuple(range(len(self))) if out_indices is None else tuple(out_indices)

    def _get(self, key: str, idx: int | list[int] | None):
        if idx is None:
            return [getattr(self[i], key) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [getattr(self[i], key) for i in idx]
        return getattr(self[idx], key)

    def channels(self, idx: int | list[int] | None = None):
        return self._get("num_chs", idx)

    def reduction(self, idx: int | list[int] | None = None):
        return self._get("reduction", idx)

    def module_name(self, idx: int | list[int] | None = None):
        return self._get("module", idx)

    def get_dicts(self, keys: list[str] | None = None, idx: int | list[int] | None = None) -> list[dict]:
        indices = self.out_indices if idx is None else (idx if isinstance(idx, (tuple, list)) else [idx])
        dicts = [{**self[i].to_dict(), "index": i} for i in indices]
        return dicts if keys is None else [{k: d[k] for k in keys} for d in dicts]

    def get(self, key: str, idx: int | list[int] | None = None):
        """timm's ``get``: one field ("num_chs", "reduction" or "module") per tap."""
        if key not in ("num_chs", "reduction", "module"):
            raise KeyError(key)
        return self._get(key, idx)


@contextlib.contextmanager
def _recomputing(module: nn.Module) -> Iterator[None]:
    """The backward pass's second forward of a checkpointed block leaves BatchNorm's running
    statistics as the first forward left them. It normalises with the batch's statistics as that
    forward did, but would fold them into the running averages a second time, doubling their
    momentum and the batch count."""
    stats = [(b, b.clone()) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]  # fmt: skip
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, before in stats:
                buffer.copy_(before)


class InceptionNet(nn.Module):
    """Stem -> stages -> pooled head; see :func:`inceptionv4.create_model` for the arguments."""

    __jit_unused_properties__ = ["default_cfg", "head_hidden_size"]  # timm's metadata: Python only

    def __init__(
        self,
        *,
        stem: nn.Sequential,
        stage_a: nn.Sequential,
        reduction_a: nn.Module,
        stage_b: nn.Sequential,
        reduction_b: nn.Module,
        stage_c: nn.Sequential,
        post: nn.Module | None,
        num_features: int,
        feature_info: list[FeatureInfo],
        in_chans: int,
        min_input_size: int,
        num_classes: int = 1000,
        drop_rate: float = 0.2,
        global_pool: str = "avg",
        embedding_dim: int = 0,
        aux_logits: bool = False,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stage_a = stage_a
        self.reduction_a = reduction_a
        self.stage_b = stage_b
        self.reduction_b = reduction_b
        self.stage_c = stage_c
        self.post = post if post is not None else nn.Identity()
        self.num_features = num_features
        self.in_chans = in_chans
        self.min_input_size = min_input_size
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.feature_info = FeatureInfoList(feature_info)
        self.grad_checkpointing = False
        # What the network is and what its outputs mean, declared here and read as attributes
        # everywhere: build_model names it and gives its card; load_weights (or training) its
        # classes, their label set and where its weights came from.
        self.model_name: str = ""
        self.build_kwargs: dict = {}
        self.pretrained_cfg = None  # the ModelCard: preprocessing, input size, classes, paper figures
        self.class_names: list[str] | None = None
        self.label_set: str | None = None
        self.weights_source: str = ""
        self.features_only = False
        self.out_indices: tuple[int, ...] = tuple(range(len(self.feature_info)))
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 0:
            raise ValueError(f"embedding_dim must be an integer >= 0, got {embedding_dim!r}")
        self.head: ClassifierHead | None = (
            EmbeddingHead(num_features, embedding_dim, num_classes, global_pool, drop_rate)
            if embedding_dim
            else ClassifierHead(num_features, num_classes, global_pool, drop_rate)
        )

        # the released code's auxiliary classifier on the 17x17 map (training only)
        self.aux_head: AuxHead | None = AuxHead(stage_b_chs(self), num_classes) if aux_logits and num_classes else None

    # -- the trunk as one flat list of steps, for taps and activation checkpointing ----------------
    def trunk(self) -> Iterator[tuple[str, nn.Module]]:
        """Yield ``(name, module)`` for every step of the trunk in execution order."""
        for name, module in self.stem.named_children():
            yield f"stem.{name}", module
        for stage in STAGES:
            module = getattr(self, stage)
            if isinstance(module, nn.Sequential):
                for i, block in enumerate(module):
                    yield f"{stage}.{i}", block
            else:
                yield stage, module

    def _tap_steps(self) -> list[int]:
        """Index of the trunk step after which each feature_info entry is taken."""
        names = [name for name, _ in self.trunk()]
        steps = []
        for info in self.feature_info:
            hits = [i for i, n in enumerate(names) if n == info.module or n.startswith(info.module + ".")]
            steps.append(hits[-1])
        return steps

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError for a tensor the network cannot take, before any convolution runs.
        (Skipped while torch.fx traces the network: a Proxy has no shape to check.)"""
        if _fx_tracing():
            return
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():  # a decoded image straight from PIL/torchvision.io
            raise TypeError(
                f"expected floating-point pixels normalised as the model's Preprocessing does, got {x.dtype}"
            )
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected a batch of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2], x.shape[-1]
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(
                f"input {h}x{w} is smaller than the minimum {self.min_input_size}x{self.min_input_size} "
                "this network can reduce to a 1x1 map"
            )

    def _step(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            if torch.compiler.is_compiling():  # compiled, BN's updates happen once anyway: they are
                return checkpoint(module, x, use_reentrant=False)  # the graph's outputs, not replayed
            return checkpoint(
                module, x, use_reentrant=False, context_fn=lambda: (contextlib.nullcontext(), _recomputing(module))
            )
        return module(x)

    # -- timm's model contract --------------------------------------------------------------------
    @property
    def default_cfg(self) -> dict:
        """timm's ``default_cfg``: the model card as a plain dict (input_size, pool_size, crop_pct,
        interpolation, mean, std, first_conv, classifier, num_classes, min_input_size, ...)."""
        return dict(self.pretrained_cfg)

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)``: the pooled features the classifier reads."""
        return self.head.num_features if self.head is not None else self.num_features

    # -- the public interface ---------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the last feature map, e.g. (N, 1536, 8, 8) for Inception-v4 at 299."""
        if not torch.jit.is_scripting():
            self.check_input(x)
            if self.grad_checkpointing and self.training:
                for _, module in self.trunk():
                    x = self._step(module, x)
                return x
        x = self.stem(x)  # Fig. 3 / Fig. 14
        x = self.stage_a(x)  # Inception-A / -ResNet-A
        x = self.reduction_a(x)
        x = self.stage_b(x)
        x = self.reduction_b(x)
        x = self.stage_c(x)
        return self.post(x)

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the feature maps of the taps in ``indices`` (strides
        2, 4, 8, 16, 32; an int n: the last n; None: ``out_indices``) and the final feature map.

        Returns ``(final, [maps])``, or only ``[maps]`` with ``intermediates_only``. With
        ``stop_early`` the trunk stops at the last tap asked for, and ``final`` is that map. These
        networks have no final norm, so ``norm`` changes nothing; ``output_fmt`` is NCHW.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        self.check_input(x)
        take = self._take_indices(indices)
        taps = self._tap_steps()
        wanted = {taps[i]: i for i in take}
        last = max(wanted)
        out: dict[int, torch.Tensor] = {}
        for step, (_, module) in enumerate(self.trunk()):
            x = self._step(module, x)
            if step in wanted:
                out[wanted[step]] = x
            if step == last and (intermediates_only or stop_early):
                break
        maps = [out[i] for i in take]
        return maps if intermediates_only else (x, maps)

    def _take_indices(self, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
        n = len(self.feature_info)
        if indices is None:
            return list(self.out_indices)
        if isinstance(indices, int) and not isinstance(indices, bool):
            if not 0 < indices <= n:
                raise ValueError(f"indices as a count must be in [1, {n}], got {indices}")
            return list(range(n - indices, n))
        take = [i % n if isinstance(i, int) and -n <= i < n else None for i in indices]
        if not take or None in take:
            raise ValueError(f"indices must be integers in [-{n}, {n}), got {indices!r}")
        return take

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """timm's ``prune_intermediate_layers``: drop every trunk step after the last tap in
        ``indices`` (and, with ``prune_head``, the classifier and pooling); returns the taps kept."""
        take = self._take_indices(indices)
        self._cut_after(max(self._tap_steps()[i] for i in take))
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def _cut_after(self, last: int) -> None:
        for step, (name, _) in enumerate(list(self.trunk())):
            if step > last:
                parent, _, child = name.rpartition(".")
                setattr(self.get_submodule(parent) if parent else self, child, nn.Identity())

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout and classify a feature map; ``pre_logits=True`` stops before the classifier."""
        if self.head is None:
            raise RuntimeError("this model was built with features_only=True and has no head")
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, torch.Tensor]:
        """Logits; a list of feature maps with ``features_only``; and (logits, auxiliary logits)
        in training mode when the model has an auxiliary head."""
        if not torch.jit.is_scripting():
            if self.features_only:
                return self.forward_intermediates(x, intermediates_only=True)
            if self.aux_head is not None and self.training:
                self.check_input(x)
                aux_step = self._tap_steps()[3]  # the end of stage_b: 17x17 at 299
                aux = None
                for step, (_, module) in enumerate(self.trunk()):
                    x = self._step(module, x)
                    if step == aux_step:
                        aux = self.aux_head(x)
                return self.forward_head(x), aux
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        if self.head is None:
            raise RuntimeError("this model was built with features_only=True and has no head")
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for ``num_classes`` (0 gives pooled features; with ``global_pool=""``
        the unpooled feature map), e.g. to fine-tune. The new layers take the device, dtype and
        train/eval mode of the network."""
        check_num_classes(num_classes)
        if self.head is None:
            self.head = ClassifierHead(self.num_features, num_classes, "avg" if global_pool is None else global_pool,
                                       self.drop_rate)  # fmt: skip
        else:
            self.head = self.head.reset(num_classes, global_pool)
        if self.aux_head is not None:
            self.aux_head = AuxHead(self.aux_head.conv1.conv.in_channels, num_classes) if num_classes else None
        like = next(self.stem.parameters(), None)
        if like is not None:
            self.head.to(device=like.device, dtype=like.dtype)
            if self.aux_head is not None:
                self.aux_head.to(device=like.device, dtype=like.dtype)
        self.head.train(self.training)
        self.num_classes = num_classes
        self.features_only = False

    def embedding_model(self) -> "InceptionNet":
        """A copy of this network whose output is its embedding: an embedding head's
        L2-normalised output (facenet's; its classifier over identities dropped), else the pooled
        features the classifier reads (``forward_head(pre_logits=True)``). The engines run it as
        they run any network (``open_session(..., output="embeddings")``)."""
        import copy

        if self.head is None:
            raise ValueError("this network has no head (features_only): build it with a head to embed")
        out = copy.deepcopy(self)
        out.reset_classifier(0)  # an EmbeddingHead keeps its projection and normalises; else pooled features
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass: less memory, ~30% more compute."""
        self.grad_checkpointing = bool(enable)

    def as_features_only(self, out_indices: tuple[int, ...] | None = None) -> "InceptionNet":
        """Turn this model into a backbone that returns the maps at ``out_indices``; drops the head
        and every step after the last tap (so each remaining parameter gets a gradient)."""
        n = len(self.feature_info)
        indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        if not indices or any(not isinstance(i, int) or not -n <= i < n for i in indices):
            raise ValueError(f"out_indices must be integers in [0, {n}), got {out_indices!r}")
        indices = tuple(i % n for i in indices)
        self._cut_after(max(self._tap_steps()[i] for i in indices))
        self.head = None
        self.aux_head = None
        self.features_only = True
        self.out_indices = indices
        self.feature_info = FeatureInfoList(self.feature_info, indices)
        return self


def check_num_classes(num_classes: int) -> None:
    """ValueError unless ``num_classes`` is a class count (an int >= 0; 0: no classifier, features only)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")


def stage_b_chs(model: InceptionNet) -> int:
    """Width of the 17x17 stage (the input of Reduction-B)."""
    block = model.stage_b[-1]
    return block.out_chs
