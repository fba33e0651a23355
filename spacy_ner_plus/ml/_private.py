"""Every access to a private attribute of spacy-transformers or thinc, in one place.

The package reaches into other libraries' internals only through these
functions, each with the reason no public way exists, so an upgrade of either
library has one file to check (tests/test_layout.py holds the rule: no other
module names a private attribute of a foreign object). The pins in setup.cfg
(spacy-transformers 1.4.x, thinc 8.3.x) are the versions these were read from.
"""
from typing import Any, Dict, Optional, Tuple

import torch
from spacy_transformers.data_classes import HFObjects
from thinc.shims import Shim


def hf_objects(shim: Shim) -> HFObjects:
    """The tokenizer, transformer and vocab an ``HFShim`` holds."""
    # HFShim keeps them in `_hfmodel` and offers no getter: spacy-transformers'
    # own layers read the attribute directly (transformer_model.py).
    return shim._hfmodel  # type: ignore[attr-defined]


def set_hf_objects(shim: Shim, hf: HFObjects) -> None:
    """Give an ``HFShim`` a (new) tokenizer and transformer."""
    # No setter exists either: spacy-transformers' own init
    # (transformer_model.init) assigns both attributes. The thinc side
    # (`_model`, what PyTorchShim runs and optimizes) must be the same module
    # as `_hfmodel.transformer`, or training would update a module that
    # prediction never sees.
    shim._hfmodel = hf  # type: ignore[attr-defined]
    shim._model = hf.transformer  # type: ignore[attr-defined]


def init_configs(hf: HFObjects) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The tokenizer and transformer settings an ``HFObjects`` was made with
    (what ``from_pretrained`` needs before the weights are loaded)."""
    # HFObjects stores them as `_init_tokenizer_config` and
    # `_init_transformer_config` (dataclass fields with a leading underscore,
    # no property); spacy-transformers' init reads them the same way.
    return dict(hf._init_tokenizer_config), dict(hf._init_transformer_config)


def unloaded_hf_objects(tokenizer_config: Dict[str, Any], transformer_config: Dict[str, Any]) -> HFObjects:
    """An ``HFObjects`` with no tokenizer or transformer yet, remembering the settings to load them with."""
    # The settings can only be given as the dataclass's private fields
    # (`_init_tokenizer_config`, `_init_transformer_config`), positionally as
    # spacy-transformers' own TransformerModel does; HFShim saves them for an
    # uninitialized model.
    return HFObjects(None, None, None, dict(tokenizer_config), dict(transformer_config))


def shim_torch_module(shim: Shim) -> Optional[torch.nn.Module]:
    """The PyTorch module a thinc shim wraps, or None for a shim of another framework."""
    # thinc's Shim keeps the wrapped model in `_model` and has no accessor
    # (thinc's own PyTorchShim methods use self._model); global gradient
    # clipping must see the torch parameters beside thinc's.
    module = getattr(shim, "_model", None)
    return module if isinstance(module, torch.nn.Module) else None
