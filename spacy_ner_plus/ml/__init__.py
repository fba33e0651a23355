"""Registered thinc architectures and layers: the token classifier (architectures), the Hugging
Face encoder (transformer: its forward pass; shim: the HF objects and their runtime state;
wordpieces: token -> wordpiece alignment; inference: the modules prediction runs; lora: LoRA
adapters), lexical features, the embedded backbone and the loss. Private attributes of
spacy-transformers and thinc are reached only through _private."""
