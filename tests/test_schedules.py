"""spacy-ner-plus.warmup_linear_epochs.v1: sized by epochs, by max_steps or by whichever ends
training first; buildable without a corpus; clear errors when it cannot know its length."""
import io
from pathlib import Path
from typing import List, Optional

import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry
from spacy.vocab import Vocab

from spacy_ner_plus.training.schedules import configure_warmup_linear_epochs, training_steps

CONFIG = Path(__file__).parents[1] / "configs" / "ner_plus.cfg"
RATE = 1e-3


def write_corpus(path: Path, n_docs: int) -> Path:
    vocab = Vocab()
    docs = [Doc(vocab, words=["John", "lives", "in", "Paris"], ents=["B-PER", "O", "O", "B-LOC"]) for _ in range(n_docs)]
    DocBin(docs=docs).to_disk(path)
    return path


def take(schedule, n: int) -> List[float]:
    return [next(schedule) for _ in range(n)]


def test_epochs_size_the_schedule_from_the_corpus(tmp_path):
    corpus = write_corpus(tmp_path / "train.spacy", 95)  # 10 batches of 10 per epoch
    values = take(configure_warmup_linear_epochs(corpus, 10, 2, initial_rate=RATE, warmup_fraction=0.1), 22)
    # 20 steps, 2 of warm-up: 0, half, peak at the end of warm-up, then linear decay to 0 at step 20
    assert values[0] == 0.0
    assert values[1] == pytest.approx(RATE / 2)
    assert values[2] == pytest.approx(RATE)
    assert values[11] == pytest.approx(RATE * 9 / 18)
    assert values[19] == pytest.approx(RATE / 18)
    assert values[20] == values[21] == 0.0
    assert max(values) == values[2]


@pytest.mark.parametrize("epochs", [0, -1])
def test_max_steps_alone_sizes_the_schedule(epochs):
    # training by steps: no corpus is needed (nor read)
    values = take(configure_warmup_linear_epochs(None, 32, epochs, initial_rate=RATE, max_steps=50), 52)
    assert values[0] == 0.0
    assert values[5] == pytest.approx(RATE)  # warm-up: 10% of 50
    assert max(values) == values[5]
    assert values[49] == pytest.approx(RATE / 45)
    assert values[50] == values[51] == 0.0


@pytest.mark.parametrize("max_steps,total", [(25, 25), (100, 40), (40, 40)])
def test_with_both_limits_whichever_ends_training_first(tmp_path, max_steps, total):
    corpus = write_corpus(tmp_path / "train.spacy", 100)  # 10 steps per epoch, 4 epochs: 40 steps
    values = take(configure_warmup_linear_epochs(corpus, 10, 4, initial_rate=RATE, max_steps=max_steps), total + 2)
    warmup = round(total * 0.1)
    assert values[warmup] == pytest.approx(RATE) and max(values) == values[warmup]
    assert values[total - 1] > 0.0
    assert values[total] == values[total + 1] == 0.0


def test_corpus_directory_is_counted(tmp_path):
    write_corpus(tmp_path / "a.spacy", 30)
    (tmp_path / "sub").mkdir()
    write_corpus(tmp_path / "sub" / "b.spacy", 30)
    assert training_steps(60, 10, 1, 0) == 6
    values = take(configure_warmup_linear_epochs(tmp_path, 10, 1, initial_rate=RATE), 7)
    assert values[1] == pytest.approx(RATE) and values[6] == 0.0 and values[5] > 0.0


@pytest.mark.parametrize(
    "corpus,epochs,max_steps,expected",
    [
        (None, 4, 0, "no training corpus was given"),
        (None, 4, 100, "no training corpus was given"),  # the epochs might end training first
        (None, 0, 0, "set training.max_steps"),
        (None, -1, 0, "set training.max_steps"),
    ],
)
def test_unknown_length_builds_but_refuses_to_train(corpus, epochs, max_steps, expected):
    schedule = configure_warmup_linear_epochs(corpus, 32, epochs, max_steps=max_steps)
    # the optimizer takes the first value when it is built (nlp.initialize): the warm-up's start
    assert next(schedule) == 0.0
    # the training loop asks for the next one after the first update
    with pytest.raises(ValueError, match=expected):
        next(schedule)


def test_bad_settings_fail_when_built(tmp_path):
    with pytest.raises(ValueError, match="batch_size >= 1"):
        configure_warmup_linear_epochs(None, 0, 0, max_steps=10)
    with pytest.raises(ValueError, match="max_steps >= 0"):
        configure_warmup_linear_epochs(None, 32, 0, max_steps=-1)
    with pytest.raises(ValueError, match="warmup_fraction"):
        configure_warmup_linear_epochs(None, 32, 0, max_steps=10, warmup_fraction=1.5)
    with pytest.raises(ValueError, match="holds no docs"):
        configure_warmup_linear_epochs(write_corpus(tmp_path / "empty.spacy", 0), 32, 2)
    (tmp_path / "no_docbins").mkdir()
    with pytest.raises(ValueError, match="no .spacy file"):
        configure_warmup_linear_epochs(tmp_path / "no_docbins", 32, 2)
    with pytest.raises(ValueError, match="nothing_here: no such file or directory"):
        configure_warmup_linear_epochs(tmp_path / "nothing_here", 32, 2)


def shipped_optimizer(**overrides):
    """The shipped config's optimizer, resolved as spacy train resolves it."""
    config = spacy.util.load_config(CONFIG, overrides=overrides, interpolate=True)
    return registry.resolve({"optimizer": config["training"]["optimizer"]})["optimizer"]


def test_shipped_config_trains_by_steps_and_by_epochs(tmp_path):
    # `spacy train ... --training.max_epochs 0 --training.max_steps N` (failed before the first step)
    optimizer = shipped_optimizer(**{"training.max_epochs": 0, "training.max_steps": 20})
    rates = [optimizer.learn_rate]
    for _ in range(21):
        optimizer.step_schedules()
        rates.append(optimizer.learn_rate)
    assert rates[0] == 0.0 and rates[2] == pytest.approx(5e-5) and rates[20] == 0.0
    # by epochs: 64 docs, batches of 32, 4 epochs = 8 steps
    corpus = write_corpus(tmp_path / "train.spacy", 64)
    optimizer = shipped_optimizer(**{"paths.train": str(corpus)})
    rates = [optimizer.learn_rate]
    for _ in range(8):
        optimizer.step_schedules()
        rates.append(optimizer.learn_rate)
    assert rates[1] == pytest.approx(5e-5) and rates[7] > 0.0 and rates[8] == 0.0


def test_default_config_builds_and_initializes_in_python():
    """load_model_from_config + nlp.initialize with no corpus path (paths.train = null)
    works; training with the schedule then says what to set."""
    config = spacy.util.load_config(CONFIG, interpolate=True)
    assert config["paths"]["train"] is None
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    example = Example.from_dict(nlp.make_doc("John lives in Paris"), {"entities": [(0, 4, "PER"), (14, 19, "LOC")]})
    optimizer = nlp.initialize(lambda: [example])
    assert nlp.get_pipe("ner_plus").labels == ("LOC", "PER")
    assert optimizer.learn_rate == 0.0
    nlp.update([example], sgd=optimizer)
    with pytest.raises(ValueError, match="no training corpus was given to count its steps per epoch"):
        optimizer.step_schedules()


# spaCy's own training loop, on a small spaCy `ner` (the schedule does not depend on the pipe)
LOOP_CONFIG = """
[paths]
train = null
dev = null

[nlp]
lang = "en"
pipeline = ["ner"]

[components]

[components.ner]
factory = "ner"

[corpora]

[corpora.train]
@readers = "spacy.Corpus.v1"
path = ${paths.train}

[corpora.dev]
@readers = "spacy.Corpus.v1"
path = ${paths.dev}

[training]
seed = 0
gpu_allocator = null
max_epochs = 0
max_steps = 0
patience = 40
eval_frequency = 1000
before_update = {"@callbacks":"test_schedules.count_updates.v1"}

[training.batcher]
@batchers = "spacy.batch_by_sequence.v1"
size = 2

[training.optimizer]
@optimizers = "Adam.v1"

[training.optimizer.learn_rate]
@schedules = "test_schedules.recorded.v1"
corpus = ${paths.train}
batch_size = ${training.batcher.size}
epochs = ${training.max_epochs}
max_steps = ${training.max_steps}
initial_rate = 0.001
"""

RECORDED: List[float] = []
UPDATES: List[int] = []


@registry.schedules("test_schedules.recorded.v1")
def recorded_schedule(corpus: Optional[str], batch_size: int, epochs: int, max_steps: int, initial_rate: float):
    """The schedule under test, with every value the optimizer takes recorded."""
    RECORDED.clear()
    for value in configure_warmup_linear_epochs(corpus, batch_size, epochs, initial_rate=initial_rate, max_steps=max_steps):
        RECORDED.append(value)
        yield value


@registry.callbacks("test_schedules.count_updates.v1")
def count_updates():
    UPDATES.clear()
    return lambda nlp, info: UPDATES.append(info["step"])


def spacy_train(tmp_path, max_epochs: int, max_steps: int):
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train

    corpus = write_corpus(tmp_path / "train.spacy", 6)  # 3 batches of 2 per epoch
    overrides = {"paths.train": str(corpus), "paths.dev": str(corpus), "training.max_epochs": max_epochs, "training.max_steps": max_steps}
    config = spacy.util.load_config_from_str(LOOP_CONFIG, overrides=overrides)
    train(init_nlp(config), output_path=None, stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.parametrize(
    "max_epochs,max_steps,updates",
    [
        (0, 7, 8),  # by steps: spaCy stops after step max_steps (steps 0..7)
        (2, 0, 6),  # by epochs: 2 x 3 batches
        (2, 100, 6),  # both: the epochs end first
        (10, 4, 5),  # both: the steps end first
    ],
)
def test_spacy_training_loop_ends_as_the_learning_rate_reaches_zero(tmp_path, max_epochs, max_steps, updates):
    spacy_train(tmp_path, max_epochs, max_steps)
    assert UPDATES == list(range(updates))
    used = RECORDED[:updates]  # the rate of update k is the schedule's value k
    assert used[0] == 0.0 and max(used) == pytest.approx(1e-3)
    total = min(x for x in (3 * max_epochs if max_epochs > 0 else None, max_steps or None) if x)
    assert RECORDED[total] == 0.0 and all(v > 0.0 for v in RECORDED[1:total])


def test_spacy_training_loop_with_no_end_fails_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="no epoch limit.*set training.max_steps"):
        spacy_train(tmp_path, 0, 0)
    assert UPDATES == [0]  # after the first update, before any other
