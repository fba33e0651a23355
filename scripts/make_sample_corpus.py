"""Write the shipped sample corpus (assets/sample/*.iob) from hand-written templates.

The sentences are ours: templates and name lists written for this project,
filled with a fixed seed so the files are reproducible. Entity types: PER,
ORG, LOC, DATE. Documents of 8-12 sentences are separated by -DOCSTART-.

    python scripts/make_sample_corpus.py assets/sample
"""
import random
import sys
from pathlib import Path

FIRST = ["Anna", "Tomas", "Priya", "Kwame", "Lena", "Mateo", "Yuki", "Fatima", "Oliver", "Ingrid", "Rahul",
         "Chloe", "Dmitri", "Amara", "Jonas", "Sofia", "Hamid", "Grace", "Luis", "Mei", "Noah", "Elif", "Kofi", "Hana"]
LAST = ["Keller", "Okafor", "Nakamura", "Silva", "Brennan", "Haddad", "Lindqvist", "Moreau", "Patel", "Novak",
        "Fischer", "Mensah", "Alvarez", "Tanaka", "Rossi", "Kowalski", "O'Neill", "Schmidt", "Dubois", "Chen"]
ORG = ["Northwind Logistics", "Helios Bank", "the Meridian Institute", "Bluefin Analytics", "Vantage Motors",
       "Crescent Health", "the Atlas Foundation", "Orchard Software", "Granite Insurance", "Polar Air",
       "Summit Pharmaceuticals", "the Riverside Council", "Kestrel Media", "Ironwood Mining", "Lumen Energy"]
LOC = ["Lisbon", "Nairobi", "Osaka", "Toronto", "Krakow", "Valparaiso", "Bergen", "Marseille", "Pune",
       "Accra", "Hamburg", "Cork", "Adelaide", "Tbilisi", "New Orleans", "Cape Town", "Rio de Janeiro",
       "the Rhine valley", "Lake Geneva", "South Korea", "Portugal", "Kenya"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

TEMPLATES = [
    "{PER} joined {ORG} in {DATE} .",
    "{PER} , a spokesperson for {ORG} , said the office in {LOC} would close .",
    "{ORG} opened a new plant near {LOC} on {DATE} .",
    "On {DATE} , {PER} flew from {LOC} to {LOC} .",
    "The board of {ORG} named {PER} chief executive .",
    "{PER} met {PER} in {LOC} to discuss the merger with {ORG} .",
    "Shares of {ORG} fell 3 percent after the report .",
    "{LOC} will host the conference on {DATE} .",
    "According to {PER} , sales in {LOC} doubled last year .",
    "{ORG} and {ORG} signed the agreement in {LOC} .",
    "The contract expires on {DATE} , {PER} told reporters .",
    "{PER} was born in {LOC} .",
    "Flooding hit {LOC} again , officials at {ORG} said .",
    "Prices rose sharply in {LOC} during {DATE} .",
    "{PER} leads the research team at {ORG} .",
    "Nothing was decided at the meeting , the chairman said .",
    "The weather stayed mild for most of the week .",
    "Analysts expect a slower quarter for the whole sector .",
    "{ORG} , based in {LOC} , employs about 4,000 people .",
    "{PER} resigned from {ORG} on {DATE} after nine years .",
    "Investigators from {ORG} visited {LOC} and {LOC} .",
    "{PER} and {PER} will present the results in {DATE} .",
    "A new rail line links {LOC} with {LOC} .",
    "\" We are not for sale , \" {PER} said in {LOC} .",
]


def date(rng: random.Random) -> list:
    kind = rng.randrange(3)
    month = rng.choice(MONTHS)
    year = str(rng.randrange(1995, 2027))
    if kind == 0:
        return [month, year]
    if kind == 1:
        return [month, str(rng.randrange(1, 29)), ",", year]
    return [str(rng.randrange(1, 29)), month, year]


def pools(split: str) -> dict:
    """Names for a split: train sees three quarters of each list, dev and test all
    of it, so dev/test scores measure generalisation to unseen names too."""
    lists = {"FIRST": FIRST, "LAST": LAST, "ORG": ORG, "LOC": LOC}
    if split == "train":
        return {k: v[: max(1, len(v) * 3 // 4)] for k, v in lists.items()}
    return lists


def fill(template: str, rng: random.Random, names: dict) -> list:
    tokens = []
    for part in template.split():
        if part in ("{PER}", "{ORG}", "{LOC}", "{DATE}"):
            label = part[1:-1]
            if label == "PER":
                words = ([rng.choice(names["FIRST"])] if rng.random() < 0.8 else []) + [rng.choice(names["LAST"])]
            elif label == "ORG":
                words = rng.choice(names["ORG"]).split()
            elif label == "LOC":
                words = rng.choice(names["LOC"]).split()
            else:
                words = date(rng)
            if words[0] == "the":  # "the" stays outside the entity, as in CoNLL
                tokens.append(("the", "O"))
                words = words[1:]
            tokens.extend((w, ("B-" if i == 0 else "I-") + label) for i, w in enumerate(words))
        else:
            tokens.append((part, "O"))
    if tokens[0][1] == "O":
        tokens[0] = (tokens[0][0][:1].upper() + tokens[0][0][1:], "O")
    return tokens


def write(path: Path, n_sentences: int, rng: random.Random, names: dict) -> None:
    lines = []
    written = 0
    while written < n_sentences:
        lines += ["-DOCSTART- O", ""]
        for _ in range(min(rng.randrange(8, 13), n_sentences - written)):
            lines += [f"{w} {t}" for w, t in fill(rng.choice(TEMPLATES), rng, names)] + [""]
            written += 1
    path.write_text("\n".join(lines), encoding="utf8")


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", 400, 1), ("dev", 120, 2), ("test", 120, 3)):
        write(out / f"{name}.iob", n, random.Random(seed), pools(name))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "assets/sample")
