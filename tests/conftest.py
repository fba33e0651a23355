"""Shared fixtures. Slow tests carry ``@pytest.mark.slow`` and run by default, as CI
(``.ci/run`` -> ``python3 scripts/dev.py test``) runs everything; ``pytest -m "not slow"``
leaves them out for a quick run while developing."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


TRAIN = [
    ("John lives in New York City .", [(0, 4, "PER"), (14, 27, "LOC")]),
    ("Mary works for Acme Corp in Paris .", [(0, 4, "PER"), (15, 24, "ORG"), (28, 33, "LOC")]),
]


def train_examples(nlp):
    from spacy.training import Example

    return [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in TRAIN]


@pytest.fixture(scope="session")
def trained_nlp():
    """A ner_plus pipeline overfitted on TRAIN (spaCy's test_overfitting pattern).
    Tests that change its cfg must restore it."""
    import spacy
    from thinc.api import Adam

    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner_plus")
    exs = train_examples(nlp)
    nlp.initialize(lambda: exs)
    optimizer = Adam(1e-3)
    losses = {}
    for _ in range(40):
        losses = nlp.update(exs, sgd=optimizer, drop=0.0)
    nlp.meta["final_losses"] = losses
    return nlp


def project_copy(tmp_path: Path) -> Path:
    """The spaCy project (project.yml, configs, scripts, the package) copied under ``tmp_path``,
    so a workflow test writes its corpus/, training/ and metrics/ there, not in the checkout."""
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "project.yml", project / "project.yml")
    for folder in ("configs", "scripts", "spacy_ner_plus"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return project
