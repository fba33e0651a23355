"""The PII redaction service (FastAPI on uvicorn): `python -m spacy_ner_plus serve MODEL`."""
