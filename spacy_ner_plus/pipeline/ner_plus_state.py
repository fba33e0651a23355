"""The learned state of a ``ner_plus`` pipe beyond its weights: how it is saved,
how pipelines saved by older releases are read, and whether a calibration
still fits the weights it is stored with.

Saving: ``cfg`` is written as JSON by ``TrainablePipe``, which rounds floats;
thresholds and calibrators must come back bit for bit, so they also travel as
msgpack (an ``exact`` entry beside ``cfg``).

Loading a pipeline saved before 0.2.0: it kept its settings in ``cfg`` as
well; they are read once, a difference from the config is reported (the
config wins, as for every setting), and they are dropped.

An ONNX export of the encoder (ml/onnx_runtime.py) is checked against the
weights as a calibration is: with ``runtime = "onnxruntime"`` a pipeline whose
weights differ from those the export came from is refused at load.
"""
import hashlib
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from thinc.api import Model

from ..calibration import Calibrator
from ..ml.lora import effective_state_dict
from ..ml.onnx_runtime import META_FILE, OnnxEncoder, read_meta, require
from ..ml.shim import get_transformer
from ..ml.transformer import inference_modules

RUNTIMES = ("torch", "onnxruntime")
# cfg entries that must round-trip bit for bit
EXACT_KEYS = ("thresholds", "calibration", "calibration_weights", "decoding_bias")
# Settings that pipelines saved before 0.2.0 kept in cfg (now they come from the config).
OLD_CFG_SETTINGS = ("window", "stride", "window_batch_size", "sort_buffer_tokens", "class_weights",
                    "focal_gamma", "max_grad_norm", "spans_key", "quantize")


def exact_state(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of ``cfg`` saved as msgpack beside it."""
    return {key: cfg[key] for key in EXACT_KEYS if key in cfg}


def current_settings(pipe: TrainablePipe) -> Dict[str, Any]:
    """The pipe's settings that old pipelines also kept in cfg, and its scheme,
    taken before a load replaces ``cfg``."""
    settings = {key: getattr(pipe, key) for key in OLD_CFG_SETTINGS}
    settings["scheme"] = pipe.cfg["scheme"]
    return settings


def restore_learned_state(pipe: TrainablePipe, settings: Dict[str, Any], exact: Optional[Dict[str, Any]]) -> None:
    """After ``TrainablePipe`` loaded ``pipe.cfg``: put back the exact floats,
    check the scheme, and read and drop the settings of a pipeline saved
    before 0.2.0 (the settings stay those of the config).

    settings (Dict[str, Any]): ``current_settings(pipe)`` from before the load.
    exact (Optional[Dict[str, Any]]): the saved ``exact`` entry, None when absent.
    RAISES (ValueError): the saved scheme differs from the config's, or a
        stored calibrator cannot be read (an unknown method).
    """
    cfg = pipe.cfg
    if exact:
        cfg.update(exact)
    for label, data in cfg.get("calibration", {}).items():
        try:
            Calibrator.from_dict(data)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{pipe.name}: the stored calibrator of {label!r} cannot be read: {err}") from err
    if cfg["scheme"] != settings["scheme"]:
        raise ValueError(
            f"{pipe.name} was trained with scheme {cfg['scheme']}, but the config says {settings['scheme']}: "
            "the scheme is fixed by training (the output layer has its tags)"
        )
    old = {key: cfg.pop(key) for key in OLD_CFG_SETTINGS if key in cfg}
    differ = {key: value for key, value in old.items() if value != settings[key]}
    if differ:
        warnings.warn(
            f"{pipe.name}: this pipeline was saved by spacy-ner-plus < 0.2.0 with settings in its cfg that differ "
            f"from its config: {differ}. The config decides now ({ {k: settings[k] for k in differ} }); to keep "
            "the old values, load it with spacy.load(path, config={'components': {NAME: {...}}}) and save it again."
        )
    cfg.setdefault("calibration_weights", "")
    # Pipelines calibrated before join_touching existed read entities from the tags.
    cfg.setdefault("calibration_decoding", "tags")
    # Pipelines saved before the decoding bias existed decode without one (``cfg`` was
    # updated by the load, so a bias of the pipe loaded into must not survive either).
    if not exact or "decoding_bias" not in exact:
        cfg["decoding_bias"] = {}


def weights_fingerprint(model: Model) -> str:
    """SHA-256 of every weight of a ner_plus model (thinc parameters and the transformer's state)."""
    digest = hashlib.sha256()
    for i, node in enumerate(model.walk()):
        for name in node.param_names:
            if node.has_param(name):
                digest.update(f"{i}:{name}".encode())
                digest.update(numpy.ascontiguousarray(model.ops.to_numpy(node.get_param(name))).tobytes())
    # an adapted transformer counts as its merged weights, so the fingerprint
    # is the same before saving, after a merged save and after loading an adapter
    for name, tensor in effective_state_dict(get_transformer(model.get_ref("encoder"))).items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ner_plus_pipe_names(nlp: Language) -> List[str]:
    """Names of the pipes of ``nlp`` made by the ``ner_plus`` factory."""
    return [name for name in nlp.component_names if nlp.get_pipe_meta(name).factory == "ner_plus"]


def stale_calibrations(nlp: Language) -> List[str]:
    """One message per ner_plus pipe whose calibration was fitted to other weights
    or to entities decoded in the other ``join_touching`` mode."""
    messages = []
    for name in ner_plus_pipe_names(nlp):
        pipe = nlp.get_pipe(name)
        fitted = pipe.cfg.get("calibration_weights")
        if not (pipe.cfg["calibration"] or pipe.cfg["thresholds"] or pipe.cfg.get("decoding_bias")):
            continue
        if not fitted:
            messages.append(f"{name}: its calibration does not say which weights it was fitted to (saved before 0.2.0)")
        else:
            now = pipe.weights_fingerprint()
            if fitted != now:
                messages.append(
                    f"{name}: its calibration and thresholds were fitted to other weights (fingerprint "
                    f"{fitted[:12]}, now {now[:12]}), as was its decoding bias: run `python -m spacy_ner_plus calibrate` again"
                )
        decoded = pipe.cfg.get("calibration_decoding", "tags")
        if decoded != pipe.decoding_mode:
            messages.append(
                f"{name}: its calibration and thresholds were fitted to entities decoded with join_touching = "
                f"{decoded == 'join_touching'}, but it now decodes with join_touching = {pipe.join_touching}: "
                "run `python -m spacy_ner_plus calibrate` again"
            )
    return messages


def load_onnx_export(pipe: TrainablePipe, path: Union[str, Path]) -> Optional[OnnxEncoder]:
    """The ONNX export in the pipe's folder ``path``, None when there is none. With
    ``runtime = "onnxruntime"`` it must be there and come from the pipe's weights.

    RAISES (FileNotFoundError): runtime = "onnxruntime" and no export (or not its int8 file).
    RAISES (onnx_runtime.StaleExportError): the export came from other weights.
    RAISES (ImportError): runtime = "onnxruntime" without onnxruntime installed.
    """
    path = Path(path)
    meta = read_meta(path)
    command = f"python -m spacy_ner_plus export-onnx {path.parent}"
    if meta is None:
        if pipe.runtime == "onnxruntime":
            raise FileNotFoundError(
                f"{pipe.name}: runtime = \"onnxruntime\" but {path} holds no ONNX export ({META_FILE}): run `{command}`, "
                "or load with runtime = \"torch\""
            )
        return None
    export = OnnxEncoder(path, meta)
    if pipe.runtime == "onnxruntime":
        require("onnxruntime")  # a missing extra is reported at load, not at the first text
        export.check(pipe.weights_fingerprint(), pipe.quantize, pipe.name, str(path.parent))
    return export


def save_onnx_export(pipe: TrainablePipe, path: Union[str, Path]) -> None:
    """Write the pipe's ONNX export beside its weights, unless the weights were
    trained after it was loaded (it would be refused at load)."""
    export = inference_modules(pipe.model.get_ref("encoder")).onnx
    if export is not None and not export.stale:
        export.copy_to(path)
