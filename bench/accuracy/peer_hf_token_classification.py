"""Peer: Hugging Face AutoModelForTokenClassification fine-tuned with the recipe.

What a user would write with transformers alone (the run_ner recipe): words
split into wordpieces with is_split_into_words, labels on first subwords and
-100 elsewhere, AdamW (LR 5e-5, weight decay 0.01, none on biases and
LayerNorm), 10% linear warm-up then linear decay, gradient clipping 1.0,
batches of 32 sentences, best epoch on dev strict F1. Predictions are read
at first subwords and decoded leniently (conlleval), then scored by
spacy_ner_plus.evaluation.evaluate like every other system.

Long documents (whole CVs): ``--chunk-tokens N`` cuts every doc into
consecutive pieces of at most N spaCy tokens, never inside a gold entity
(what a transformers user does with text longer than the model's window;
truncating at 512 wordpieces would drop most of a CV). Training batches are
then --batch-size pieces; predictions on the pieces are put back together
into one Doc per document before scoring, so the scores are per document.

    python -m bench peer_hf_token_classification train.spacy dev.spacy test.spacy --epochs 3 --output m.json
"""
import argparse
import json
import random
from pathlib import Path
from typing import List, Tuple

import torch
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from spacy.vocab import Vocab
from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup

from spacy_ner_plus.ml.backbone import embedded_backbone_path
from spacy_ner_plus.evaluation.evaluate import evaluate_examples, strict_scores
from spacy_ner_plus.schemes import spans_to_tags, tags_to_spans

VOCAB = Vocab()


def load(path: Path) -> List[Doc]:
    return list(DocBin().from_disk(path).get_docs(VOCAB))


def chunk_bounds(doc: Doc, size: int) -> List[Tuple[int, int]]:
    """(start, end) of consecutive pieces of at most ``size`` tokens, cut only
    where no gold entity continues (a longer entity is a piece of its own)."""
    inside = set()
    for ent in doc.ents:
        inside.update(range(ent.start + 1, ent.end))
    bounds, start = [], 0
    while start < len(doc):
        end = min(start + size, len(doc))
        while end < len(doc) and end in inside and end > start + 1:
            end -= 1
        if end in inside:  # an entity longer than size from start: take all of it
            end = next(e.end for e in doc.ents if e.start < end < e.end)
        bounds.append((start, end))
        start = end
    return bounds


def chunk_docs(docs: List[Doc], size: int) -> Tuple[List[Doc], List[Tuple[int, int, int]]]:
    """Every doc cut by chunk_bounds, and (doc index, start, end) of each piece."""
    pieces, where = [], []
    for i, doc in enumerate(docs):
        for start, end in chunk_bounds(doc, size):
            pieces.append(doc[start:end].as_doc())
            where.append((i, start, end))
    return pieces, where


def join_pieces(docs: List[Doc], pieces: List[Doc], where: List[Tuple[int, int, int]]) -> List[Doc]:
    """Predicted pieces back into one Doc per document (the gold words)."""
    joined = [Doc(VOCAB, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d]) for d in docs]
    ents: List[List[Span]] = [[] for _ in docs]
    for piece, (i, start, _) in zip(pieces, where):
        ents[i].extend(Span(joined[i], start + e.start, start + e.end, label=e.label_) for e in piece.ents)
    for doc, spans in zip(joined, ents):
        doc.ents = spans
    return joined


def doc_tags(doc: Doc) -> List[str]:
    return spans_to_tags([(e.start, e.end, e.label_) for e in doc.ents], len(doc), "IOB2")


def encode(tokenizer, docs: List[Doc], label2id) -> List[dict]:
    words = [[t.text for t in d] for d in docs]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=512)
    features = []
    for i, doc in enumerate(docs):
        tags = doc_tags(doc)
        previous = None
        labels = []
        for w in enc.word_ids(i):
            labels.append(-100 if w is None or w == previous else label2id[tags[w]])
            previous = w
        features.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": labels, "word_ids": enc.word_ids(i)})
    return features


def collate(batch: List[dict], pad_id: int) -> dict:
    width = max(len(f["input_ids"]) for f in batch)
    out = {k: torch.full((len(batch), width), v, dtype=torch.long) for k, v in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100))}
    for i, f in enumerate(batch):
        n = len(f["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(f["input_ids"])
        out["attention_mask"][i, :n] = torch.tensor(f["attention_mask"])
        out["labels"][i, :n] = torch.tensor(f["labels"])
    return out


@torch.inference_mode()
def predict(model, features, docs, id2label, pad_id, batch_size=64) -> List[Doc]:
    model.eval()
    predicted = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        batch = collate(chunk, pad_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
        for row, f, doc in zip(logits, chunk, docs[start : start + batch_size]):
            tags = ["O"] * len(doc)
            previous = None
            for pos, w in enumerate(f["word_ids"]):
                if w is not None and w != previous:
                    tags[w] = id2label[int(row[pos].argmax())]
                previous = w
            pred = Doc(VOCAB, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
            pred.ents = [Span(pred, s, e, label=l) for s, e, l in tags_to_spans(tags)]
            predicted.append(pred)
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train", type=Path)
    parser.add_argument("dev", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-tokens", type=int, default=0, help="cut docs into pieces of at most N tokens (0: whole docs, truncated at 512 wordpieces)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--save", type=Path, default=None, help="save the best model and tokenizer here")
    args = parser.parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train, dev, test = load(args.train), load(args.dev), load(args.test)
    whole_dev, whole_test = dev, test
    if args.chunk_tokens:
        train = chunk_docs(train, args.chunk_tokens)[0]
        dev, dev_where = chunk_docs(dev, args.chunk_tokens)
        test, test_where = chunk_docs(test, args.chunk_tokens)
    labels = sorted({t for d in train for t in doc_tags(d)}, key=lambda t: (t != "O", t[2:], t))
    label2id = {t: i for i, t in enumerate(labels)}
    id2label = dict(enumerate(labels))
    path = str(embedded_backbone_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(labels), id2label=id2label, label2id=label2id)
    train_f, dev_f, test_f = (encode(tokenizer, d, label2id) for d in (train, dev, test))
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    steps = -(-len(train_f) // args.batch_size) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, round(0.1 * steps), steps)
    best_f1, best_state = -1.0, None
    order = list(range(len(train_f)))
    for epoch in range(args.epochs):
        model.train()
        random.shuffle(order)
        for start in range(0, len(order), args.batch_size):
            batch = collate([train_f[i] for i in order[start : start + args.batch_size]], tokenizer.pad_token_id)
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        dev_pred = predict(model, dev_f, dev, id2label, tokenizer.pad_token_id)
        if args.chunk_tokens:
            dev_pred = join_pieces(whole_dev, dev_pred, dev_where)
        f1 = strict_scores([Example(p, g) for p, g in zip(dev_pred, whole_dev)])["f1"]
        print(json.dumps({"epoch": epoch + 1, "dev_f1": round(f1, 4)}), flush=True)
        if f1 > best_f1:
            best_f1, best_state = f1, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    if args.save is not None:
        model.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)
    test_pred = predict(model, test_f, test, id2label, tokenizer.pad_token_id)
    if args.chunk_tokens:
        test_pred = join_pieces(whole_test, test_pred, test_where)
    metrics = evaluate_examples([Example(p, g) for p, g in zip(test_pred, whole_test)], "IOB2")
    metrics["dev_f1"] = best_f1
    args.output.write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
