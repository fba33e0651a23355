"""Registered model builders (spacy-ner-plus.*.v1)."""
from typing import Any, Dict, List, Optional, Sequence

from spacy.tokens import Span
from spacy.util import registry
from thinc.api import Dropout, Linear, Model, chain, concatenate, with_array
from thinc.types import Floats2d

from .lexical import LexicalFeatures
from .transformer import HFTokenEncoder


@registry.architectures("spacy-ner-plus.TokenClassifier.v1")
def build_token_classifier(
    encoder: Model[List[Span], List[Floats2d]],
    lexical: Optional[Model[List[Span], List[Floats2d]]] = None,
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[List[Span], List[Floats2d]]:
    """Token classification over windows: encoder (+ lexical features) -> dropout -> linear.

    The model takes windows (Spans) rather than Docs because the ner_plus
    component chooses the windows of a long Doc itself and merges the
    per-token distributions of overlapping windows before decoding; a
    listener on a shared transformer could not run on windows it did not
    choose. It returns one row of logits per token (softmax is applied in
    the loss and at prediction, where temperature and merging need logits).

    encoder (Model): windows -> one vector per token (HFTokenEncoder).
    lexical (Optional[Model]): windows -> lexical feature vectors, concatenated.
    dropout (float): dropout before the output layer.
    nO (Optional[int]): number of tags; set by the component from its labels.
    """
    features = encoder if lexical is None else concatenate(encoder, lexical)
    output = Linear(nO=nO)
    model = chain(features, with_array(chain(Dropout(dropout), output)))
    model.set_ref("encoder", encoder)
    model.set_ref("output", output)
    return model


@registry.architectures("spacy-ner-plus.HFTokenEncoder.v1")
def configure_hf_token_encoder(
    name: str,
    pooling: str = "first",
    max_wordpieces_per_token: int = 16,
    tokenizer_config: Dict = {},
    transformer_config: Dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: Dict = {},
    lora: Optional[Dict[str, Any]] = None,
) -> Model[List[Span], List[Floats2d]]:
    """A Hugging Face encoder giving one vector per spaCy token.

    name (str): a model name on the hub (roberta-base) or a directory; see
        spacy-ner-plus.embedded_backbone.v1 for the embedded default.
    pooling (str): "first" wordpiece of each token (default) or "mean".
    max_wordpieces_per_token (int): longer tokens are cut, with a warning.
    tokenizer_config (Dict): passed to AutoTokenizer.from_pretrained.
    transformer_config (Dict): passed to AutoConfig.from_pretrained.
    lora (Optional[Dict]): fine-tune LoRA adapters (peft) instead of the whole
        transformer: r (8), alpha (16), dropout (0.1), target_modules (None:
        peft's default for the model type), exclude_modules, merge (true: save
        the adapters merged into the weights; false: save the adapter alone and
        take the frozen weights from `name` at load). None (default): full
        fine-tuning.
    """
    return HFTokenEncoder(
        name, pooling, max_wordpieces_per_token, tokenizer_config, transformer_config, mixed_precision, grad_scaler_config, lora
    )


@registry.architectures("spacy-ner-plus.LexicalFeatures.v1")
def configure_lexical_features(
    attrs: Sequence[str] = ("SHAPE", "PREFIX", "SUFFIX"), width: int = 32, rows: int = 5000
) -> Model[List[Span], List[Floats2d]]:
    """Hashed embeddings of token attributes, concatenated.

    attrs (Sequence[str]): spaCy token attributes.
    width (int): embedding width per attribute.
    rows (int): hash table rows per attribute.
    """
    return LexicalFeatures(list(attrs), width, rows)
