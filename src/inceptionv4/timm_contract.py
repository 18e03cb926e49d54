"""Our networks in timm's registry: ``timm.create_model("iv4_inception_v4")`` builds ours.

:func:`register_timm` adds one entrypoint per network under a prefix (default ``iv4_``, so
timm's own ``inception_v4`` is left as it is) and a pretrained cfg from its model card, so
timm's factory, its data config and its own model tests see them as they see a timm network.
The networks themselves carry timm's contract natively (``default_cfg``, ``feature_info``,
``forward_intermediates``, ``reset_classifier(0, "")``, ...); this module only registers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch

from .models.registry import build_model, builder_of, get_model_card, list_models

#: timm reads each registered entrypoint's cfg from its module's ``default_cfgs``
default_cfgs: dict[str, dict] = {}
__all__: list[str] = ["register_timm"]

_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def register_timm(prefix: str = "iv4_") -> list[str]:
    """Register every network of :func:`~inceptionv4.list_models` in timm's registry as
    ``prefix + name``; returns the names registered (registering again replaces them).

    The entrypoints take timm's factory arguments: ``pretrained=True`` loads the card's released
    weights through :func:`inceptionv4.create_model` (a download), ``device`` and ``dtype`` place
    the network, and an argument neither timm nor the network knows is a TypeError, as timm's
    own entrypoints raise.
    """
    try:
        from timm.models import register_model
        from timm.models._pretrained import PretrainedCfg
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "timm":
            raise
        raise ModuleNotFoundError("register_timm needs timm: pip install 'inceptionv4[timm]'", name="timm") from None

    if not prefix or not prefix.replace("_", "").isalnum():
        raise ValueError(f"prefix must be letters, digits and '_', got {prefix!r}")
    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    names = []
    for name in list_models():
        timm_name = prefix + name
        card = get_model_card(name)
        default_cfgs[timm_name] = {k: v for k, v in card.items() if k in known}
        entry = _entrypoint(name, timm_name)
        register_model(entry)
        names.append(timm_name)
    return names


def _entrypoint(name: str, timm_name: str):
    accepted = set(inspect.signature(build_model).parameters) | set(inspect.signature(builder_of(name)).parameters)
    accepted -= {"name", "kwargs"}

    def entry(pretrained: bool = False, device=None, dtype=None, **kwargs) -> torch.nn.Module:
        for key in _TIMM_ONLY:
            kwargs.pop(key, None)
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise TypeError(f"{timm_name}() got unexpected keyword argument(s) {', '.join(unknown)}")
        with torch.device(device) if device is not None else contextlib.nullcontext():
            if pretrained:
                from .api import create_model as load

                hubs = [w for w in get_model_card(name).weights_from if w.startswith("timm/")]
                if not hubs:
                    raise ValueError(f"{name} has no released ImageNet weights on the hub: load a weights file "
                                     f"with inceptionv4.create_model({name!r}, pretrained=PATH)")  # fmt: skip
                model = load(name, pretrained=hubs[0], **kwargs)
            else:
                model = build_model(name, **kwargs)
        if dtype is not None:
            model.to(dtype=dtype)
        return model

    entry.__name__ = entry.__qualname__ = timm_name
    entry.__module__ = __name__
    entry.__doc__ = f"{name} from inceptionv4 ({get_model_card(name).title}), in timm's registry."
    return entry
