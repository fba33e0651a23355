"""Registered thinc architectures and layers: the token classifier, the Hugging Face encoder,
lexical features, the embedded backbone and the loss."""
