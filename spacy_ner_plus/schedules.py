"""The recipe's learning-rate schedule, sized from the training corpus."""
import math
from pathlib import Path
from typing import Iterable, Union

from spacy.tokens import DocBin
from spacy.util import registry
from thinc.api import warmup_linear



def count_docs(path: Union[str, Path]) -> int:
    """Number of docs in a DocBin file or a directory of them."""
    path = Path(path)
    files = sorted(path.rglob("*.spacy")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no .spacy file to size the learning-rate schedule")
    return sum(len(DocBin().from_disk(f)) for f in files)


@registry.schedules("spacy-ner-plus.warmup_linear_epochs.v1")
def configure_warmup_linear_epochs(
    corpus: Union[str, Path], batch_size: int, epochs: int, initial_rate: float = 5e-5, warmup_fraction: float = 0.1
) -> Iterable[float]:
    """Linear warm-up over ``warmup_fraction`` of all steps, then linear decay to 0.

    The number of steps is counted from the training corpus: ceil(docs /
    batch_size) per epoch, times ``epochs`` (match training.max_epochs and
    the batcher's size, as the shipped configs do with ${...} references).
    corpus (Union[str, Path]): the training DocBin (or a directory of them).
    batch_size (int): docs per batch (spacy.batch_by_sequence.v1 size).
    epochs (int): training epochs.
    initial_rate (float): peak learning rate.
    warmup_fraction (float): share of the steps spent warming up.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError("warmup_linear_epochs needs epochs >= 1 and batch_size >= 1 (set training.max_epochs)")
    total = math.ceil(count_docs(corpus) / batch_size) * epochs
    return warmup_linear(initial_rate, max(1, round(total * warmup_fraction)), total)
