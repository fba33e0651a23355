"""LoRA for the encoder's transformer: settings, adapting, merging, fingerprints.

With ``lora`` set, the encoder's ``initialize`` wraps the transformer in
peft's LoRA adapters: only the adapters (and the thinc head and lexical
features) have gradients, so the optimizer never sees the frozen backbone.
Saving merges the adapters into the weights (a plain Hugging Face model: the
pipeline loads and predicts without peft), or with ``merge = false`` keeps only
the adapter and takes the frozen weights from the backbone named in the config
at load time, after checking that they are the ones it was trained on (the
shim does the saving, ml/shim.py). Prediction runs a merged copy of an adapted
transformer (ml/inference.py), so it costs what a fully fine-tuned one does.
"""
import copy
import hashlib
from io import BytesIO
from typing import Any, Dict, Optional

import torch
from thinc.api import get_torch_default_device

LORA_DEFAULTS: Dict[str, Any] = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.1,
    # None: peft's default for the model type (query and value for BERT)
    "target_modules": None,
    # the pooler's output is never used; adapters there would get no gradient
    "exclude_modules": ".*pooler.*",
    "merge": True,
}


def lora_settings(config: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The encoder's ``lora`` block with its defaults, or None when LoRA is off.

    RAISES (ValueError): on an unknown key or a value of the wrong kind.
    """
    if config is None:
        return None
    unknown = sorted(set(config) - set(LORA_DEFAULTS))
    if unknown:
        raise ValueError(f"[model.encoder.lora]: unknown setting(s) {unknown}; known: {sorted(LORA_DEFAULTS)}")
    settings = {**LORA_DEFAULTS, **config}
    if not isinstance(settings["r"], int) or isinstance(settings["r"], bool) or settings["r"] < 1:
        raise ValueError(f"[model.encoder.lora] r must be a positive integer, not {settings['r']!r}")
    if not isinstance(settings["alpha"], (int, float)) or settings["alpha"] <= 0:
        raise ValueError(f"[model.encoder.lora] alpha must be a positive number, not {settings['alpha']!r}")
    if not isinstance(settings["dropout"], (int, float)) or not 0 <= settings["dropout"] < 1:
        raise ValueError(f"[model.encoder.lora] dropout must be in [0, 1), not {settings['dropout']!r}")
    targets = settings["target_modules"]
    if targets is not None and not isinstance(targets, str):
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"[model.encoder.lora] target_modules must be module names or a regex, not {targets!r}")
        settings["target_modules"] = list(targets)
    if not isinstance(settings["merge"], bool):
        raise ValueError(f"[model.encoder.lora] merge must be true or false, not {settings['merge']!r}")
    return settings


def peft_module():
    """The peft library, or an ImportError that says how to install it."""
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "LoRA ([components.*.model.encoder.lora]) needs the peft library: pip install 'spacy-ner-plus[lora]'"
        ) from err
    return peft


def is_adapted(transformer: Optional[torch.nn.Module]) -> bool:
    """Whether the transformer is a peft model (LoRA adapters on a frozen backbone)."""
    return transformer is not None and getattr(transformer, "peft_config", None) is not None


def adapt(transformer: torch.nn.Module, settings: Dict[str, Any]) -> torch.nn.Module:
    """Wrap a Hugging Face transformer in LoRA adapters; its own weights are frozen."""
    peft = peft_module()
    config = peft.LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=settings["target_modules"],
        exclude_modules=settings["exclude_modules"],
    )
    return peft.get_peft_model(transformer, config)


def merged_copy(transformer: torch.nn.Module) -> torch.nn.Module:
    """A plain Hugging Face model with the adapters merged in; ``transformer`` is unchanged."""
    return copy.deepcopy(transformer).merge_and_unload()


def effective_state_dict(transformer: Optional[torch.nn.Module]) -> Dict[str, torch.Tensor]:
    """The weights a transformer predicts with: its own state, or for an
    adapted one the state of its merged copy (so a pipeline has the same
    weights whether it holds adapters, was saved merged, or loaded an adapter)."""
    if transformer is None:
        return {}
    return merged_copy(transformer).state_dict() if is_adapted(transformer) else transformer.state_dict()


def state_fingerprint(state: Dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and tensors."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def torch_bytes(state: Dict[str, torch.Tensor]) -> bytes:
    buffer = BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def torch_state(data: bytes) -> Dict[str, torch.Tensor]:
    return torch.load(BytesIO(data), map_location=get_torch_default_device())
