"""The encoder's shim: spacy-transformers' ``HFShim`` that saves LoRA adapters
and holds what prediction derives from its Hugging Face objects.

The HF model, tokenizer and weights live in the shim, which serializes them
with the pipeline, so a trained pipeline loads offline. Beside them the shim
holds two pieces of runtime state, each with its own lock: the word ->
wordpieces cache of the current tokenizer (ml/wordpieces.py) and the modules
prediction runs (ml/inference.py). They live here and not in ``model.attrs``
because thinc deep-copies attrs in ``Model.copy`` (a lock cannot be copied)
and tries to serialize them; copying the shim (``Model.copy``,
``copy.deepcopy(nlp)``, pickling) gives the copy fresh, empty ones, so a copy
never shares a lock or a cache with the original, and rebuilds them from its
own tokenizer and weights.
"""
import threading
from typing import Any, Dict, Optional

import srsly
import torch
from spacy_transformers.data_classes import HFObjects
from spacy_transformers.layers.hf_shim import HFShim
from thinc.api import Model

from ._private import hf_objects, init_configs, set_hf_objects
from .inference import InferenceModules
from .lora import (
    LORA_DEFAULTS,
    adapt,
    is_adapted,
    merged_copy,
    peft_module,
    state_fingerprint,
    torch_bytes,
    torch_state,
)


class PieceCache:
    """Holds the wordpiece state of the current tokenizer (a
    ``wordpieces.PieceState``), replaced as a whole under ``lock`` when the
    tokenizer object changes, so a thread that holds the old one keeps a
    consistent view. Copies start empty."""

    def __init__(self) -> None:
        self.state: Optional[Any] = None
        self.lock = threading.Lock()

    def __deepcopy__(self, memo) -> "PieceCache":
        return PieceCache()

    def __reduce__(self):
        return (PieceCache, ())


class EncoderShim(HFShim):
    """spacy-transformers' HFShim, saving a LoRA-adapted transformer merged
    (``merge = true``: a plain Hugging Face model) or as its adapter alone,
    with a fingerprint of the frozen weights it was trained on."""

    def __init__(self, hf: HFObjects, name: str, lora: Optional[Dict[str, Any]], **kwargs) -> None:
        super().__init__(hf, **kwargs)
        self.name = name
        self.lora = lora
        self.base_fingerprint = ""
        self.pieces = PieceCache()
        self.inference = InferenceModules()

    @property
    def hf(self) -> HFObjects:
        return hf_objects(self)

    def load_pretrained(self, loader) -> None:
        """Load the tokenizer and transformer with ``loader(name, tokenizer_config,
        transformer_config)`` when the shim has none yet (a pipeline being initialized)."""
        if self.hf.transformer is None:
            loaded = loader(self.name, *init_configs(self.hf))
            set_hf_objects(self, HFObjects(loaded.tokenizer, loaded.transformer, loaded.vocab_file_contents))

    def adapt(self) -> None:
        """Put LoRA adapters on the loaded transformer (once)."""
        hf = self.hf
        if self.lora is None or is_adapted(hf.transformer):
            return
        self.base_fingerprint = state_fingerprint(hf.transformer.state_dict())
        self._set_transformer(adapt(hf.transformer, self.lora))

    def _set_transformer(self, transformer: torch.nn.Module) -> None:
        hf = self.hf
        set_hf_objects(self, HFObjects(hf.tokenizer, transformer, hf.vocab_file_contents))

    def to_bytes(self) -> bytes:
        data = super().to_bytes()
        transformer = self.hf.transformer
        if not is_adapted(transformer):
            return data
        msg = srsly.msgpack_loads(data)
        settings = self.lora or LORA_DEFAULTS
        if settings["merge"]:
            msg["state"] = torch_bytes(merged_copy(transformer).state_dict())
        else:
            peft = peft_module()
            msg["state"] = torch_bytes(peft.get_peft_model_state_dict(transformer))
            msg["adapter"] = {"lora": settings, "base_fingerprint": self.base_fingerprint, "base_name": self.name}
        return srsly.msgpack_dumps(msg)

    def from_bytes(self, bytes_data: bytes) -> "EncoderShim":
        msg = srsly.msgpack_loads(bytes_data)
        adapter = msg.get("adapter")
        if not adapter:
            return super().from_bytes(bytes_data)
        # an adapter saved alone: the frozen weights come from the backbone the config names
        from transformers import AutoModel

        try:
            base = AutoModel.from_pretrained(self.name, **init_configs(self.hf)[1])
        except (OSError, ValueError) as err:
            raise OSError(
                f"this pipeline keeps only its LoRA adapter (merge = false); its backbone {self.name} did not load: {err}. "
                f"Install the backbone it was trained on ({adapter['base_name']})"
            ) from err
        found = state_fingerprint(base.state_dict())
        if found != adapter["base_fingerprint"]:
            raise ValueError(
                f"this pipeline's LoRA adapter was trained on other backbone weights than those of {self.name} "
                f"(fingerprint {found[:12]}, expected {adapter['base_fingerprint'][:12]}; trained on "
                f"{adapter['base_name']}): install the backbone it was trained with, or save it with merge = true"
            )
        adapter_state = torch_state(msg["state"])
        msg["state"] = torch_bytes(base.state_dict())
        del msg["adapter"]
        super().from_bytes(srsly.msgpack_dumps(msg))
        self.base_fingerprint = found
        adapted = adapt(self.hf.transformer, adapter["lora"])
        peft_module().set_peft_model_state_dict(adapted, adapter_state)
        self._set_transformer(adapted)
        return self


def encoder_shim(model: Model) -> EncoderShim:
    """The shim of an HFTokenEncoder (its one layer's one shim)."""
    return model.layers[0].shims[0]


def get_tokenizer(model: Model):
    """The Hugging Face tokenizer of an HFTokenEncoder."""
    return encoder_shim(model).hf.tokenizer


def get_transformer(model: Model) -> Optional[torch.nn.Module]:
    """The Hugging Face transformer (torch module) of an HFTokenEncoder, None before initialize."""
    return encoder_shim(model).hf.transformer
