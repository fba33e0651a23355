"""The modules the encoder predicts with, built once per transformer under a lock.

Prediction (``is_train=False``) never goes through spacy-transformers' shim,
whose ``predict`` switches the one shared module to eval mode and back to
train mode around every call (so a concurrent call could run with dropout on).
It runs an eval-mode view of the transformer that shares its parameters, or a
copy: with ``quantize`` (on CPU) an int8 dynamically quantized one, and for a
LoRA-adapted transformer one with the adapters merged into the weights.

An ``InferenceModules`` belongs to one encoder shim (ml/shim.py), never to
``model.attrs``: thinc deep-copies attrs in ``Model.copy``, and a lock cannot
be copied. Copying or pickling one gives a fresh, empty one with the same
``quantize`` setting, so a copied pipeline builds its own modules from its own
weights and never shares the original's lock.

``onnx`` holds the pipe's ONNX export (ml/onnx_runtime.py) when it has one; with
``runtime = "onnxruntime"`` the encoder runs it instead of a torch module. Training
the weights marks it stale, so it refuses to predict (and is not saved) rather
than predict with the old weights.
"""
import copy
import threading
from typing import Any, Optional, Tuple

import torch

from .lora import is_adapted, merged_copy


class InferenceModules:
    """The module prediction runs for one transformer: an eval-mode view that
    shares its parameters and buffers, or an int8 or merged copy. Each is
    built once per transformer object and device, under a lock;
    ``invalidate`` drops a copy when the weights change (the view sees new
    weights by itself)."""

    def __init__(self, quantize: bool = False, onnx: Optional[Any] = None, runtime: str = "torch") -> None:
        self.quantize = quantize
        self.runtime = runtime  # "torch" or "onnxruntime"
        self.onnx = onnx  # the pipe's onnx_runtime.OnnxEncoder, None when it has no export
        self.lock = threading.Lock()
        self._key: Optional[Tuple[str, bool]] = None  # (device, quantize) of the module built for _source
        self._source: Optional[torch.nn.Module] = None
        self._module: Optional[torch.nn.Module] = None
        self._copied = False

    def __deepcopy__(self, memo) -> "InferenceModules":
        return InferenceModules(self.quantize, copy.deepcopy(self.onnx, memo), self.runtime)

    def __reduce__(self):
        return (InferenceModules, (self.quantize, self.onnx, self.runtime))

    @property
    def module(self) -> Optional[torch.nn.Module]:
        """The module built last, None before the first prediction."""
        return self._module

    def get(self, transformer: torch.nn.Module) -> torch.nn.Module:
        device = next(transformer.parameters()).device
        quantize = self.quantize and device.type == "cpu"
        key = (str(device), quantize)
        module = self._module
        if self._key == key and self._source is transformer and module is not None:
            return module
        with self.lock:
            if self._key != key or self._source is not transformer or self._module is None:
                adapted = is_adapted(transformer)
                self._copied = quantize or adapted
                if adapted:  # the merged copy is ours: quantize it in place, no second copy
                    module = merged_copy(transformer).eval()
                    self._module = quantize_in_place(module) if quantize else module
                else:
                    self._module = quantize_in_place(copy.deepcopy(transformer).eval()) if quantize else eval_view(transformer)
                self._source, self._key = transformer, key
            return self._module

    def invalidate(self) -> None:
        with self.lock:
            if self.onnx is not None:
                self.onnx.stale = "the weights changed after it was loaded (training or initialize): save the pipeline and export it again"
            if self._copied:
                self._key, self._source, self._module = None, None, None


def eval_view(transformer: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree in eval mode whose parameters and buffers are
    the original's tensors (no weights copied; in-place updates show through)."""
    shared = {id(t): t for t in list(transformer.parameters()) + list(transformer.buffers())}
    return copy.deepcopy(transformer, memo=shared).eval()


def quantize_in_place(module: torch.nn.Module) -> torch.nn.Module:
    """int8 dynamic quantization of the Linear layers of a module the caller owns."""
    # per-channel weight scales: on CoNLL++ the int8 F1 loss was 0.63 against 1.85
    # with one scale per matrix, at the same speed, 1.49x fp32
    # (python -m bench int8_variants, docs/BENCHMARKS.md)
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear: qconfig}, inplace=True).eval()
