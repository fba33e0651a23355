"""The encoder's transformer exported to ONNX and run by ONNX Runtime (``runtime = "onnxruntime"``).

What is exported: the transformer alone, ``input_ids, attention_mask -> last_hidden_state``
with dynamic batch and sequence axes. The wordpiece pooling, the lexical features and the
output layer stay in thinc: per token they cost about 25 thousand multiply-adds (a
480 x n_tags product and three hashed-embedding lookups) against about 21 million for one
wordpiece through MiniLM-L6's six layers, so fusing them would save under 0.2% of the
work and split the head between two formats.

Files, in the pipe's folder of the pipeline directory (written by ``export_encoder``, the
``export-onnx`` command): ``encoder.onnx`` (fp32), ``encoder.int8.onnx`` (with ``--int8``:
ONNX Runtime's ``quantize_dynamic``, see ``INT8_OPTIONS``) and ``encoder.onnx.json``: the
weights fingerprint of the pipe the export came from (the SHA-256 that calibrations record,
``NerPlus.weights_fingerprint``), the opset, the dynamic axes and the SHA-256 of each file.

Sessions: one ``InferenceSession`` per process, made at the first prediction in that
process, never shared across ``fork`` (a session's thread pool does not survive it).
``InferenceSession.run`` is thread-safe, so the threads of one process share it. Its
intra-op threads are ``torch.get_num_threads()`` at the time it is made, so the one thread
setting users already know (``torch.set_num_threads``, ``OMP_NUM_THREADS``) governs both
runtimes; in a process forked after the pipeline was loaded the pipe sets torch to one
thread first, so each forked worker's session uses one.

onnxruntime (and, for the export, onnx and onnxscript) are imported only when a pipeline
uses this runtime or exports: ``pip install 'spacy-ner-plus[onnx]'``.
"""
import copy
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy
import torch

from .lora import is_adapted, merged_copy

META_FILE = "encoder.onnx.json"
FILES = {False: "encoder.onnx", True: "encoder.int8.onnx"}  # by quantize
OPSET = 18
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "last_hidden_state"
DYNAMIC_AXES = {name: {"0": "batch", "1": "sequence"} for name in (*INPUTS, OUTPUT)}
# onnxruntime.quantization.quantize_dynamic's options for --int8: weights int8, one scale
# per output channel (as the torch int8 path: per-channel lost less F1 than per-matrix,
# bench int8_variants), only the MatMuls with a constant weight (the linear layers; the
# attention products of two activations stay fp32), activations uint8 with a scale per call.
INT8_OPTIONS: Dict[str, Any] = {"per_channel": True, "weight_type": "QInt8", "op_types_to_quantize": ["MatMul"], "reduce_range": False}
INSTALL = "pip install 'spacy-ner-plus[onnx]'"


class StaleExportError(ValueError):
    """An ONNX export that came from other weights than the pipeline's."""


def require(module: str):
    """Import ``module`` (of the ``[onnx]`` extra), or fail saying how to install it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:
        raise ImportError(f"runtime = \"onnxruntime\" and export-onnx need {module}: {INSTALL}") from err


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Wrapper(torch.nn.Module):
    """The transformer as a function of two tensors to one, the graph the export traces."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_encoder(transformer: torch.nn.Module, folder: Union[str, Path], fingerprint: str, *, int8: bool = False) -> Dict[str, Any]:
    """Export ``transformer`` (fp32, and int8 with ``int8``) into ``folder`` with its meta file.

    Every file is written under a temporary name; the previous meta file is removed before
    the new files are moved into place and the new one written last, so an interrupted
    export leaves either the previous export or none (never files with a meta file that
    does not describe them). Without ``int8`` a previous int8 file is removed (it came from
    the previous weights).

    transformer (torch.nn.Module): the Hugging Face transformer of the encoder (a
        LoRA-adapted one is exported with its adapters merged); it is not changed.
    folder (Union[str, Path]): the pipe's folder in the pipeline directory.
    fingerprint (str): the pipe's weights fingerprint, recorded in the meta file.
    int8 (bool): also write the int8 copy (``INT8_OPTIONS``).
    RETURNS (Dict[str, Any]): the meta data written.
    """
    require("onnx")
    require("onnxscript")
    quantization = require("onnxruntime.quantization")
    folder = Path(folder)
    # a copy: moving a view to the CPU in fp32 would move the shared weights of the pipe
    module = merged_copy(transformer) if is_adapted(transformer) else copy.deepcopy(transformer)
    wrapper = _Wrapper(module.cpu().float()).eval()
    # two rows, one padded, so the traced graph cannot specialise on an all-ones mask
    input_ids = torch.tensor([[101, 2000, 2001, 2002, 102], [101, 2000, 2001, 102, 0]], dtype=torch.int64) % module.config.vocab_size
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.int64)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    written: Dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=folder, prefix=".onnx-export-") as tmp:
        fp32 = Path(tmp) / FILES[False]
        program = torch.onnx.export(
            wrapper,
            (input_ids, attention_mask),
            dynamo=True,
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
        program.save(str(fp32), external_data=False)
        written[FILES[False]] = fp32
        if int8:
            quantized = Path(tmp) / FILES[True]
            options = dict(INT8_OPTIONS)
            options["weight_type"] = getattr(quantization.QuantType, options["weight_type"])
            quantization.quantize_dynamic(str(fp32), str(quantized), **options)
            written[FILES[True]] = quantized
        meta = {
            "weights_fingerprint": fingerprint,
            "opset": OPSET,
            "inputs": list(INPUTS),
            "output": OUTPUT,
            "dynamic_axes": DYNAMIC_AXES,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "files": {name: {"sha256": file_sha256(path), "bytes": path.stat().st_size} for name, path in written.items()},
            "int8_options": INT8_OPTIONS if int8 else None,
        }
        if (folder / META_FILE).exists():
            (folder / META_FILE).unlink()
        for name, path in written.items():
            os.replace(path, folder / name)
        if not int8 and (folder / FILES[True]).exists():
            (folder / FILES[True]).unlink()
        meta_tmp = Path(tmp) / META_FILE
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf8")
        os.replace(meta_tmp, folder / META_FILE)
    return meta


def read_meta(folder: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The meta data of the export in ``folder``, None when there is none."""
    path = Path(folder) / META_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf8"))


class OnnxEncoder:
    """An export on disk and the sessions that run it, one per process.

    ``stale`` says why it must not run (the weights were trained after it was loaded),
    empty when it may. Copies and pickles hold the same files and no session.
    """

    def __init__(self, folder: Union[str, Path], meta: Dict[str, Any]) -> None:
        self.folder = Path(folder).resolve()
        self.meta = meta
        self.stale = ""
        self._sessions: Dict[int, Any] = {}  # pid -> session: a forked child never uses its parent's
        self._locks: Dict[int, threading.Lock] = {}

    def __deepcopy__(self, memo) -> "OnnxEncoder":
        copied = OnnxEncoder(self.folder, self.meta)
        copied.stale = self.stale
        return copied

    def __reduce__(self):
        return (_restore, (str(self.folder), self.meta, self.stale))

    def check(self, fingerprint: str, quantize: bool, pipe: str, pipeline_dir: str) -> None:
        """Refuse an export of other weights, or a missing file.

        RAISES (StaleExportError): the export came from other weights.
        RAISES (FileNotFoundError): the file ``quantize`` needs is not there.
        """
        command = f"python -m spacy_ner_plus export-onnx {pipeline_dir}" + (" --int8" if quantize else "")
        exported = self.meta.get("weights_fingerprint", "")
        if exported != fingerprint:
            raise StaleExportError(
                f"{pipe}: the ONNX export in {self.folder} came from other weights (fingerprint {exported}) than this "
                f"pipeline's (fingerprint {fingerprint}): export again with `{command}`, or load with runtime = \"torch\""
            )
        name = FILES[quantize]
        if name not in self.meta.get("files", {}) or not (self.folder / name).exists():
            raise FileNotFoundError(
                f"{pipe}: quantize = {str(quantize).lower()} with runtime = \"onnxruntime\" needs {self.folder / name}, "
                f"which is not there: run `{command}`"
            )

    def session(self, quantize: bool):
        """This process's session of the fp32 or int8 file, made at the first call."""
        if self.stale:
            raise ValueError(f"the ONNX export in {self.folder} no longer matches the weights: {self.stale}")
        pid = os.getpid()
        sessions = self._sessions.get(pid)
        if sessions is not None and quantize in sessions:
            return sessions[quantize]
        lock = self._locks.setdefault(pid, threading.Lock())  # a new pid gets a new lock, never a parent's held one
        with lock:
            sessions = self._sessions.setdefault(pid, {})
            if quantize not in sessions:
                sessions[quantize] = self._new_session(quantize)
            return sessions[quantize]

    def _new_session(self, quantize: bool):
        ort = require("onnxruntime")
        name = FILES[quantize]
        path = self.folder / name
        data = path.read_bytes()
        expected = self.meta["files"][name]["sha256"]
        found = hashlib.sha256(data).hexdigest()
        if found != expected:
            raise ValueError(f"{path} changed after its export (SHA-256 {found}, the export recorded {expected}): export again")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: the intra-op threads would otherwise spin on the cores that
        # the service's event loop, the batcher and torch need (and that a side-by-side timing shares)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])

    def run(self, input_ids: numpy.ndarray, attention_mask: numpy.ndarray, quantize: bool) -> numpy.ndarray:
        """Last hidden states (batch, sequence, width), float32."""
        feed = {INPUTS[0]: numpy.ascontiguousarray(input_ids, dtype="int64"), INPUTS[1]: numpy.ascontiguousarray(attention_mask, dtype="int64")}
        return self.session(quantize).run([OUTPUT], feed)[0]

    def copy_to(self, folder: Union[str, Path]) -> None:
        """Write the export's files into another pipe folder (a pipeline saved elsewhere)."""
        folder = Path(folder).resolve()
        if folder == self.folder:
            return
        for name in self.meta.get("files", {}):
            shutil.copyfile(self.folder / name, folder / name)
        (folder / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n", encoding="utf8")


def _restore(folder: str, meta: Dict[str, Any], stale: str) -> OnnxEncoder:
    encoder = OnnxEncoder(folder, meta)
    encoder.stale = stale
    return encoder
