"""The recipe's learning-rate schedule, sized from the training corpus or from max_steps.

spaCy's training loop stops at whichever comes first of ``training.max_epochs``
epochs and ``training.max_steps`` steps (0 turns either limit off), so the
schedule's length is the smaller of the two that are known:
- ``max_epochs >= 1``: ceil(docs / batch_size) steps per epoch, times the
  epochs, with the docs counted in the training corpus;
- ``max_steps >= 1``: max_steps.

When neither can be known (no corpus path and ``max_epochs >= 1`` without
``max_steps``, as when a config is built in Python with ``paths.train = null``;
or ``max_epochs < 1`` with ``max_steps = 0``, training with no end), the
schedule can still be built, so ``nlp.initialize()`` works: its first value
is the warm-up's start (0.0, whatever the length), and it raises a ValueError
that says what to set when the training loop asks for the second value, after
the first update. A schedule never silently trains at a guessed length.
"""
import math
from pathlib import Path
from typing import Iterator, Optional, Union

from spacy.tokens import DocBin
from spacy.util import registry
from thinc.api import warmup_linear


def count_docs(path: Union[str, Path]) -> int:
    """Number of docs in a DocBin file or a directory of them.

    path (Union[str, Path]): a .spacy file or a directory searched recursively.
    RETURNS (int): the number of docs.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory to size the learning-rate schedule (paths.train)")
    files = sorted(path.rglob("*.spacy")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no .spacy file to size the learning-rate schedule")
    return sum(len(DocBin().from_disk(f)) for f in files)


def training_steps(n_docs: Optional[int], batch_size: int, epochs: int, max_steps: int) -> Optional[int]:
    """How many optimizer steps spaCy's training loop takes, or None when unknown.

    n_docs (Optional[int]): docs in the training corpus (None: not known).
    batch_size (int): docs per batch.
    epochs (int): training.max_epochs (< 1: no epoch limit).
    max_steps (int): training.max_steps (0: no step limit).
    RETURNS (Optional[int]): the smaller of the known limits; None when the
        epoch limit is set but the corpus size is not known, or when neither
        limit is set.
    """
    by_steps = max_steps if max_steps > 0 else None
    if epochs < 1:
        return by_steps
    if n_docs is None:
        # the epochs may end training before max_steps: the length is not known
        return None
    by_epochs = math.ceil(n_docs / batch_size) * epochs
    return by_epochs if by_steps is None else min(by_epochs, by_steps)


def _warmup_linear_or_fail(initial_rate: float, warmup_fraction: float, total: Optional[int], why: str) -> Iterator[float]:
    # The optimizer takes the first value when it is created (nlp.initialize);
    # that value is the warm-up's start, 0.0, at any length.
    if total is not None:
        yield from warmup_linear(initial_rate, max(1, round(total * warmup_fraction)), total)
        return
    yield 0.0
    raise ValueError(f"spacy-ner-plus.warmup_linear_epochs.v1 cannot train: {why}")


@registry.schedules("spacy-ner-plus.warmup_linear_epochs.v1")
def configure_warmup_linear_epochs(
    corpus: Optional[Union[str, Path]],
    batch_size: int,
    epochs: int,
    initial_rate: float = 5e-5,
    warmup_fraction: float = 0.1,
    max_steps: int = 0,
) -> Iterator[float]:
    """Linear warm-up over ``warmup_fraction`` of all steps, then linear decay to 0.

    The number of steps is the point where spaCy's training loop stops (see the
    module docstring): ceil(docs / batch_size) * ``epochs`` with the docs
    counted in ``corpus``, or ``max_steps``, whichever is smaller; with
    ``epochs < 1`` (train by steps), ``max_steps`` alone. The shipped configs
    pass ``${paths.train}``, ``${training.batcher.size}``,
    ``${training.max_epochs}`` and ``${training.max_steps}``.

    corpus (Optional[Union[str, Path]]): the training DocBin (or a directory of
        them); None when not known (then only ``max_steps`` with ``epochs < 1``
        gives a length).
    batch_size (int): docs per batch (spacy.batch_by_sequence.v1 size).
    epochs (int): training.max_epochs; 0 or -1: no epoch limit.
    initial_rate (float): peak learning rate.
    warmup_fraction (float): share of the steps spent warming up, in [0, 1].
    max_steps (int): training.max_steps; 0: no step limit.
    RETURNS (Iterator[float]): the learning rate of each step. When the length
        cannot be known, the first value is 0.0 and the second raises a
        ValueError saying what to set.
    """
    if batch_size < 1:
        raise ValueError(f"warmup_linear_epochs needs batch_size >= 1, not {batch_size}")
    if max_steps < 0:
        raise ValueError(f"warmup_linear_epochs needs max_steps >= 0 (0: no step limit), not {max_steps}")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise ValueError(f"warmup_linear_epochs needs 0 <= warmup_fraction <= 1, not {warmup_fraction}")
    # Counted now, when a corpus is given, so a bad path fails before the model is built.
    n_docs = count_docs(corpus) if corpus is not None and epochs >= 1 else None
    if n_docs == 0:
        raise ValueError(f"{corpus}: the training corpus holds no docs, so there is nothing to train on")
    total = training_steps(n_docs, batch_size, epochs, max_steps)
    why = ""
    if total is None and epochs >= 1:
        why = (
            f"training.max_epochs is {epochs} but no training corpus was given to count its steps per epoch "
            "(set paths.train, or train by steps with training.max_epochs = 0 and training.max_steps = N)"
        )
    elif total is None:
        why = (
            f"training.max_epochs is {epochs} (no epoch limit) and training.max_steps is 0 (no step limit): "
            "set training.max_steps to the number of steps to train"
        )
    return _warmup_linear_or_fail(initial_rate, warmup_fraction, total, why)
