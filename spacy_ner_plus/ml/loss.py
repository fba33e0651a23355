"""The token-classification loss of ``ner_plus``: cross-entropy or focal loss over the tags of
labelled tokens (gold -1 is ignored, as -100 in the Hugging Face recipe), per-tag class weights,
and the global gradient-norm clipping applied before each optimizer step. Pure numpy and thinc:
the pipe gathers the gold tags of its windows and calls these."""
from typing import List, Optional, Sequence, Tuple

import numpy
from thinc.api import Model, Ops
from thinc.types import Floats2d

from ._private import shim_torch_module


def softmax(logits: numpy.ndarray) -> numpy.ndarray:
    """Row-wise softmax, shifted by each row's maximum for stability."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = numpy.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def token_classification_loss(
    ops: Ops, scores: List[Floats2d], gold: numpy.ndarray, tag_weights: Sequence[float], focal_gamma: float,
    n_labeled: Optional[int] = None,
) -> Tuple[float, List[Floats2d]]:
    """Mean (focal) cross-entropy over the labelled tokens and its gradient per window.

    ops (Ops): the model's ops (the gradients are returned on its device).
    scores (List[Floats2d]): per window, one row of tag logits per token.
    gold (numpy.ndarray): the gold tag index of every row of ``scores`` in order; -1: unlabelled.
    tag_weights (Sequence[float]): a weight per tag, or empty for 1.0 each.
    focal_gamma (float): focal loss exponent; 0 is plain cross-entropy.
    n_labeled (Optional[int]): the labelled tokens to average over; None: those of ``gold``.
        A batch scored in parts passes the batch's count, so the parts' losses and
        gradients sum to those of the whole batch.
    RETURNS (Tuple[float, List[Floats2d]]): the loss and the gradient of each window's scores.
    RAISES (ValueError): when the loss is NaN or infinite.
    """
    logits = ops.to_numpy(ops.xp.concatenate(scores)).astype("float64")
    probs = softmax(logits)
    labeled = gold >= 0
    n_labeled = max(1, int(labeled.sum()) if n_labeled is None else n_labeled)
    rows = numpy.arange(len(gold))
    safe_gold = numpy.where(labeled, gold, 0)
    p_true = numpy.clip(probs[rows, safe_gold], 1e-12, 1.0)
    weights = numpy.asarray(tag_weights or [1.0] * probs.shape[1])[safe_gold] * labeled
    gamma = focal_gamma
    one_hot = numpy.zeros_like(probs)
    one_hot[rows[labeled], gold[labeled]] = 1.0
    if gamma:
        token_loss = -((1 - p_true) ** gamma) * numpy.log(p_true)
        coef = (1 - p_true) ** gamma - gamma * (1 - p_true) ** (gamma - 1) * p_true * numpy.log(p_true)
    else:
        token_loss = -numpy.log(p_true)
        coef = numpy.ones_like(p_true)
    loss = float((weights * token_loss).sum() / n_labeled)
    if not numpy.isfinite(loss):
        raise ValueError(
            "ner_plus: the loss is NaN or infinite. Lower the learning rate, check the "
            "gradient clipping (max_grad_norm) and look for empty or corrupt docs in the batch."
        )
    grad = ((weights * coef)[:, None] * (probs - one_hot) / n_labeled).astype("float32")
    d_scores = []
    offset = 0
    for score in scores:
        d_scores.append(ops.asarray(grad[offset : offset + len(score)]))
        offset += len(score)
    return loss, d_scores


def frequency_class_weights(counts: numpy.ndarray, setting: str) -> List[float]:
    """Per-tag weights from gold tag counts: inverse frequency (or its square root, a milder
    push towards rare tags), scaled so that the average weight per gold token stays 1.

    counts (numpy.ndarray): gold tokens per tag.
    setting (str): "inverse_frequency" or "sqrt_inverse_frequency".
    RETURNS (List[float]): a weight per tag (1.0 for tags never seen).
    """
    present = counts > 0
    weights = numpy.ones(len(counts))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    if setting == "sqrt_inverse_frequency":
        weights = numpy.sqrt(weights)
    weights *= counts.sum() / float((weights * counts).sum())
    return [float(w) for w in weights]


def clip_global_grad_norm(model: Model, max_norm: float) -> float:
    """Scale all gradients (thinc and PyTorch) so their joint L2 norm is at most ``max_norm``.

    RETURNS (float): the norm before clipping.
    """
    thinc_grads = []
    torch_grads = []
    for node in model.walk():
        for name in node.grad_names:
            thinc_grads.append((node, name))
        for shim in node.shims:
            torch_model = shim_torch_module(shim)
            if torch_model is not None:
                torch_grads.extend(p.grad for p in torch_model.parameters() if p.grad is not None)
    total = 0.0
    for node, name in thinc_grads:
        g = node.get_grad(name)
        total += float((g * g).sum())
    for g in torch_grads:
        total += float((g.detach().float() ** 2).sum())
    norm = total**0.5
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for node, name in thinc_grads:
            node.set_grad(name, node.get_grad(name) * scale)
        for g in torch_grads:
            g.mul_(scale)
    return norm
