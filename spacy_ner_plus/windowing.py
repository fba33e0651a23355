"""Long documents: overlapping token windows and the merge of their predictions.

Windows are ``(start, end)`` token ranges. Each holds at most ``window``
tokens and at most ``max_wordpieces`` wordpieces; consecutive windows start
at most ``stride`` tokens apart (less when the wordpiece budget shortens a
window, so they always overlap by the same share), and a window's start moves
back to a sentence start when one lies in the last half-stride before it.
``sentence_windows`` windows each sentence on its own instead, so no window
crosses a sentence boundary (a sentence longer than a window is split as a
Doc would be).

Merge rule: each window votes for its tokens' tag distributions with weight
equal to the token's distance (in tokens, >= 1) to the nearest *inner* edge
of the window (a window edge that is not a document edge); a window that
spans the whole Doc weighs every token the same. The merged distribution is
the weighted mean. Contributions are summed in window order whatever order
they arrive in, and a token seen by one window gets that window's
distribution exactly.
"""
from typing import List, Optional, Sequence, Tuple

import numpy

Window = Tuple[int, int]


def make_windows(
    wordpieces: Sequence[int],
    window: int,
    stride: int,
    max_wordpieces: int,
    sent_starts: Optional[Sequence[bool]] = None,
) -> List[Window]:
    """Split ``len(wordpieces)`` tokens into overlapping windows.

    wordpieces (Sequence[int]): wordpieces per token (each >= 1).
    window (int): most tokens per window.
    stride (int): most tokens between the starts of two windows (<= window).
    max_wordpieces (int): most wordpieces per window (special tokens excluded).
    sent_starts (Optional[Sequence[bool]]): sentence starts, preferred as window starts.
    RETURNS (List[Window]): (start, end) ranges covering every token.
    """
    if not 0 < stride <= window:
        raise ValueError(f"need 0 < stride <= window, got stride={stride}, window={window}")
    n = len(wordpieces)
    if n == 0:
        return []
    if max(wordpieces) > max_wordpieces:
        raise ValueError(f"a token has {max(wordpieces)} wordpieces, more than a window's {max_wordpieces}")
    cumulative = numpy.concatenate([[0], numpy.cumsum(wordpieces)])
    windows: List[Window] = []
    start = 0
    while True:
        # furthest end such that the window fits both budgets
        by_pieces = int(numpy.searchsorted(cumulative, cumulative[start] + max_wordpieces, side="right")) - 1
        end = min(n, start + window, by_pieces)
        windows.append((start, end))
        if end >= n:
            return windows
        step = max(1, min(stride, (end - start) * stride // window))
        next_start = start + step
        if sent_starts is not None:
            lower = max(start + 1, next_start - max(1, stride // 2))
            for i in range(next_start, lower - 1, -1):
                if sent_starts[i]:
                    next_start = i
                    break
        start = next_start


def sentence_ranges(sent_starts: Sequence[bool]) -> List[Window]:
    """(start, end) token range of each sentence; the first token always starts one."""
    starts = [i for i, is_start in enumerate(sent_starts) if is_start or i == 0]
    return list(zip(starts, starts[1:] + [len(sent_starts)]))


def sentence_windows(
    wordpieces: Sequence[int],
    window: int,
    stride: int,
    max_wordpieces: int,
    sent_starts: Sequence[bool],
) -> List[Window]:
    """Windows that never cross a sentence boundary: ``make_windows`` of each sentence.

    A model trained on single sentences sees, on a whole document, windows
    like those it was trained on; the merge is unchanged (windows of
    different sentences do not overlap).

    sent_starts (Sequence[bool]): sentence starts, one per token (the first
        token always starts one).
    RETURNS (List[Window]): (start, end) ranges, in Doc order.
    """
    windows: List[Window] = []
    for start, end in sentence_ranges(sent_starts):
        windows.extend((start + a, start + b) for a, b in make_windows(wordpieces[start:end], window, stride, max_wordpieces))
    return windows


def token_weights(start: int, end: int, n_tokens: int) -> numpy.ndarray:
    """Merge weights of the tokens of window (start, end) in a Doc of n_tokens."""
    positions = numpy.arange(start, end)
    size = float(end - start)
    left = positions - start + 1.0 if start > 0 else numpy.full(end - start, size)
    right = end - positions if end < n_tokens else numpy.full(end - start, size)
    return numpy.minimum(left, right).astype("float32")


def merge_windows(windows: Sequence[Window], scores: Sequence[numpy.ndarray], n_tokens: int) -> numpy.ndarray:
    """Merge per-window (tokens x tags) distributions into one (n_tokens x tags) array."""
    if not windows:
        width = scores[0].shape[1] if len(scores) else 0
        return numpy.zeros((n_tokens, width), dtype="float32")
    order = sorted(range(len(windows)), key=lambda i: windows[i])
    weights = [token_weights(*windows[i], n_tokens) for i in order]
    total = numpy.zeros(n_tokens, dtype="float32")
    for (start, end), w in zip((windows[i] for i in order), weights):
        total[start:end] += w
    merged = numpy.zeros((n_tokens, scores[0].shape[1]), dtype="float32")
    for i, w in zip(order, weights):
        start, end = windows[i]
        merged[start:end] += (w / total[start:end])[:, None] * scores[i]
    return merged



def window_agreement(
    windows: Sequence[Window], window_labels: Sequence[Sequence[Optional[str]]], spans: Sequence[Tuple[int, int, str]]
) -> List[Tuple[int, int]]:
    """How many windows saw each entity whole, and how many of those agreed on it.

    A window agrees with an entity when its own most likely tag at every token of the entity
    has the entity's label (any B/I/E/S prefix): the entity did not depend on the merge.

    windows (Sequence[Window]): (start, end) in Doc order (starts and ends non-decreasing).
    window_labels (Sequence[Sequence[Optional[str]]]): per window, the label of each of its
        tokens' most likely tag (None for O).
    spans (Sequence[Tuple[int, int, str]]): decoded entities (start, end, label).
    RETURNS (List[Tuple[int, int]]): (covering, agreeing) per entity. Each entity looks back
        from the last window starting at or before it, over the windows that overlap it.
    """
    import bisect

    starts = [w[0] for w in windows]
    out: List[Tuple[int, int]] = []
    for start, end, label in spans:
        covering = agreeing = 0
        w = bisect.bisect_right(starts, start) - 1
        while w >= 0 and windows[w][1] > start:
            ws, we = windows[w]
            if ws <= start and end <= we:
                covering += 1
                labels = window_labels[w]
                if all(labels[t - ws] == label for t in range(start, end)):
                    agreeing += 1
            w -= 1
        out.append((covering, agreeing))
    return out
