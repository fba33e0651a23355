"""The benchmarks of spacy-ner-plus: one entry point, scripts by topic, an append-only ledger.

    python -m bench --list                 # every experiment, one line each
    python -m bench NAME [options]         # run one (its own argparse/typer options)
    python -m bench tables [--check]       # the generated tables of docs/*.md and README.md
    python -m bench import-history         # ledger records of every committed bench/results version

Layout: ``bench/<topic>/<name>.py`` (accuracy, calibration, speed, service, scale);
``bench/provenance.py`` (commit, machine and the ledger writer every script writes through),
``bench/ledger.py`` (reading the ledger, importing its history), ``bench/tables.py`` (the tables),
``bench/report.py`` (quick tables straight from ``bench/results/*.json``).

Registering an experiment is one line in ``EXPERIMENTS`` below: its name, its module under
``bench/``, one line of description, and the ``bench/results`` file names it writes (globs, used
to file the git history of those files under it). A module under a topic folder that is not an
experiment (a locustfile, a shell driver, a helper imported by experiments) goes into ``SUPPORT`` with
what it is. ``tests/test_bench.py`` fails when a script is in neither.

This module must stay cheap to import: ``--list`` and the tests import it, not the experiments.
"""
from typing import Dict, NamedTuple, Tuple


class Experiment(NamedTuple):
    module: str  # under bench/, dotted: "accuracy.conll_benchmark"
    description: str
    results: Tuple[str, ...] = ()  # bench/results name globs this experiment writes


TOPICS = ("accuracy", "calibration", "speed", "service", "scale")

EXPERIMENTS: Dict[str, Experiment] = {
    # accuracy
    "conll_benchmark": Experiment("accuracy.conll_benchmark", "strict entity F1 and training time: ner_plus against its peers (CoNLL-2003 -> CoNLL++, BC5CDR, converted span corpora: resume, healthcare; --seed, --gpu-id)", ("conll_*", "bc5cdr_*", "gpu_conll_*", "gpu_device_conll_*", "resume_*", "healthcare_ner_plus*", "healthcare_spacy_trf_*", "healthcare_hf_*", "healthcare_dose_drop_*")),
    "healthcare_dose": Experiment("accuracy.healthcare_dose", "ADE's partially annotated DOSE: scored on every test sentence against the DRUG-DOSE.rel ones, and the --dose drop training", ("healthcare_dose",)),
    "peer_hf_token_classification": Experiment("accuracy.peer_hf_token_classification", "peer: HF AutoModelForTokenClassification with the recipe (run by conll_benchmark hf_token_cls)"),
    "variants": Experiment("accuracy.variants", "loss and scheme variants against the default, per type, both decoding modes", ("variants_*",)),
    "error_breakdown": Experiment("accuracy.error_breakdown", "where one type's errors come from (spurious, boundary, type; by length), pipelines side by side", ("errors_*",)),
    "augmentation": Experiment("accuracy.augmentation", "mention-replace augmentation in a low-resource setting, paired seeds", ("augmentation_*",)),
    "lora": Experiment("accuracy.lora", "LoRA against full fine-tuning: learning-rate sweep, F1/parameters/time/memory, step speed", ("lora_*",)),
    "mini_rule": Experiment("accuracy.mini_rule", "the mini workflow's entity-filter rule: precision gained and recall lost on dev and test", ("mini_rule",)),
    "pii_accuracy": Experiment("accuracy.pii_accuracy", "PII accuracy on the generated test split: our service against Presidio", ("pii_accuracy*",)),
    "pii_mix": Experiment("accuracy.pii_mix", "CoNLL-2003 sentences mixed into the PII training corpus: a trained run scored on PII dev and mapped CoNLL dev", ("pii_mix_*",)),
    "pii_scheme": Experiment("accuracy.pii_scheme", "BIOES against BIO for the PII pipeline over seeds, calibrated as the workflow does", ("pii_scheme_*",)),
    "plain_text_sentences": Experiment("accuracy.plain_text_sentences", "plain text through a packaged pipeline: no sentences, a sentencizer with each within_sentences, gold sentences", ("plain_text_*",)),
    "pii_testset": Experiment("accuracy.pii_testset", "PII accuracy on the second test set (text no template of ours produced): ours, patterns only, Presidio with our pipeline, Presidio default", ("pii_testset*",)),
    "pii_pattern_context": Experiment("accuracy.pii_pattern_context", "what pii_patterns before ner_plus buys the model's own types", ("pii_pattern_context",)),
    # calibration
    "calibration_benchmark": Experiment("calibration.calibration_benchmark", "calibration methods and policies fitted on dev, measured on test (ECE, Brier, thresholds)", ("calibration_*",)),
    "calibration_variants": Experiment("calibration.calibration_variants", "length-aware maps then isotonic, a length-normalised score, against isotonic", ("calibration_variants_*",)),
    # speed
    "inference_speed": Experiment("speed.inference_speed", "CPU inference words/s: ner_plus fp32/int8 against spaCy, HF and the bare backbone", ("inference_speed*",)),
    "int8_gemm": Experiment("speed.int8_gemm", "int8 against fp32 for the backbone's matrix products on this CPU", ("int8_gemm",)),
    "onnx_runtime": Experiment("speed.onnx_runtime", "ner_plus on ONNX Runtime fp32/int8 against torch fp32 in one run: sentences, documents, one short text; equality, F1, share of the GEMM limit", ("onnx_runtime*",)),
    "int8_variants": Experiment("speed.int8_variants", "int8 quantization variants of a trained pipeline: F1 and words/s in one pass", ("int8_variants*",)),
    "padding": Experiment("speed.padding", "padded wordpieces of the test sentences under different sort buffers", ("padding",)),
    "profile_pipe": Experiment("speed.profile_pipe", "cProfile of one nlp.pipe pass: where ner_plus spends its time", ("profile_pipe",)),
    "train_speed": Experiment("speed.train_speed", "training throughput (words/s of nlp.update) on CPU or GPU", ("train_speed*",)),
    # service
    "pii_latency": Experiment("service.pii_latency", "PII service latency and throughput against offline nlp.pipe", ("pii_latency*",)),
    "adversarial_paths": Experiment("service.adversarial_paths", "each request path that grew faster than the text (issue 28): the release's code against today's on the same adversarial text", ("adversarial_paths*",)),
    "load_test": Experiment("service.load_test", "locust load on the PII service: 16 users mixing ordinary and adversarial texts; errors by kind, p95, peak RSS, audit completeness", ("service_load*",)),
    "request_overhead": Experiment("service.request_overhead", "one /v1/analyze request against in-process nlp(text) and the bare forward, 16 clients against nlp.pipe: issue 30's service targets", ("request_overhead*",)),
    "determinism": Experiment("service.determinism", "determinism of a loaded pipeline: concurrent threads and batch composition", ("determinism*",)),
    # scale
    "long_documents": Experiment("scale.long_documents", "whole documents against sentences, tiny windows, scaling to 1M characters, HF with stride", ("long_documents*",)),
    "window_tradeoff": Experiment("scale.window_tradeoff", "window overlap on whole documents: F1 against wordpieces encoded and time", ("window_tradeoff_*",)),
    "document_inference": Experiment("scale.document_inference", "within_sentences on whole documents: what stays inside sentences", ("document_inference*",)),
    "annotate_engines": Experiment("scale.annotate_engines", "annotate --engine local against --engine ray, same input and model", ("annotate_engines*",)),
    "ray_streaming": Experiment("scale.ray_streaming", "the streaming ray engine against local at 100k and 1M words: driver peak RSS, wall time with and after start-up", ("ray_streaming*",)),
}

# Files under the topic folders that are not experiments (path under bench/: what it is). A locustfile,
# for instance, is run by locust, not by python -m bench.
SUPPORT: Dict[str, str] = {
    "service/locustfile.py": "the locust users of load_test (ordinary and adversarial texts against /v1/analyze and /v1/redact)",
    "accuracy/device_conll.sh": "runs python -m bench conll_benchmark on the lent GPU machine (wheels and fp16 weights carried in)",
}

# Commands of the benchmark tooling itself (not experiments; they write no record).
COMMANDS: Dict[str, Tuple[str, str]] = {
    "tables": ("bench.tables", "rewrite the generated tables in docs/*.md and README.md from the ledger (--check: exit 1 and print a diff when stale)"),
    "import-history": ("bench.ledger", "write a ledger record for every committed version of every bench/results file (idempotent)"),
    "report": ("bench.report", "print quick tables straight from bench/results/*.json (conll, conll --seeds)"),
}


def experiment_of_result(name: str) -> str:
    """The experiment that writes ``bench/results/<name>.<ext>``: the registered glob that matches
    most specifically (``calibration_variants_*`` before ``calibration_*``)."""
    from fnmatch import fnmatchcase

    matches = [(len(pattern), exp) for exp, e in EXPERIMENTS.items() for pattern in e.results if fnmatchcase(name, pattern)]
    if not matches:
        raise KeyError(f"bench/results/{name}: no experiment in bench.EXPERIMENTS declares it (add a glob to its results)")
    return max(matches)[1]
