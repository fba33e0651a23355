"""Batch annotation on Ray Data: ``annotate --engine ray``.

The driver reads and validates the input with the local engine's reader
(``annotate.iter_input_records``), so bad lines are reported at FILE:LINE and
counted (or fatal) exactly as ``--engine local`` does, and only good records
go to Ray, as Arrow blocks in Ray's object store. A pool of actors annotates
them (``Dataset.map_batches`` with ``ActorPoolStrategy``): each actor loads
the pipeline once, by name or path, in its ``__init__`` (nothing is pickled
and shipped but the name), with ``torch.set_num_threads`` set to its CPUs.
The annotated rows stream back to the driver, which writes them in one file
(JSONL with the local engine's exact bytes, or Parquet), to a temporary
sibling renamed at the end, and counts them.

Needs the ``ray`` extra: ``pip install 'spacy-ner-plus[ray]'``.
"""
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .local import AnnotateError, AnnotateStats, annotated_record, iter_input_records

OUTPUT_FORMATS = ("jsonl", "parquet")
# How long to wait for a TCP answer from the cluster before saying it is
# unreachable: ray.init itself retries a dead GCS address for minutes.
CONNECT_TIMEOUT_S = 5.0


class RayEngineError(AnnotateError):
    """The cluster is unreachable, the pipeline did not load on a worker, or
    the output could not be written."""


class WorkerLoadError(RuntimeError):
    """Raised in an actor whose pipeline did not load; its message names the
    node and the model."""


def entities_arrow_type():
    """The Arrow type of the ``entities`` column: a list of structs with the
    fields and types of the JSONL output."""
    import pyarrow as pa

    return pa.list_(
        pa.struct([("start", pa.int64()), ("end", pa.int64()), ("label", pa.string()), ("text", pa.string()), ("confidence", pa.float64())])
    )


def _exit_with_parent(poll_s: float = 1.0) -> None:
    """End this actor's process when its parent (the node's raylet) is gone.

    Seen on this machine: after ``ray.shutdown()`` of a local instance, an
    actor busy in torch kept running as an orphan for minutes, holding its
    pipeline's memory and a core. A daemon thread notices the new parent
    (torch releases the GIL while it computes) and exits at once.
    """
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-raylet", daemon=True).start()


class PipelineActor:
    """A Ray Data actor that annotates batches of records with one pipeline.

    model (str): pipeline name or path, loaded here with ``spacy.load``; it
        must be loadable on every node (an installed pipeline package, or a
        path on a shared file system).
    text_key (str): the key of the text in each record.
    output_format (str): ``jsonl`` (one column ``json`` with each output
        line) or ``parquet`` (the record's fields plus ``entities``).
    threads (int): torch threads, the CPUs Ray reserved for this actor.
    gpu (bool): predict on the GPU Ray assigned to this actor.
    pipe_batch_size (int): ``nlp.pipe`` batch size.
    """

    def __init__(self, model: str, text_key: str, output_format: str, threads: int, gpu: bool, pipe_batch_size: int) -> None:
        import spacy
        import torch

        _exit_with_parent()
        torch.set_num_threads(threads)
        try:
            if gpu:
                spacy.require_gpu()
            self.nlp = spacy.load(model)
        except Exception as err:  # any failure: reported to the driver in one line
            raise WorkerLoadError(f"cannot load pipeline '{model}' on Ray node {socket.gethostname()}: {type(err).__name__}: {err}") from None
        self.text_key = text_key
        self.output_format = output_format
        self.pipe_batch_size = pipe_batch_size

    def __call__(self, batch):
        import pyarrow as pa

        records = [json.loads(line) for line in batch.column("record").to_pylist()]
        docs = self.nlp.pipe((r[self.text_key] for r in records), batch_size=self.pipe_batch_size)
        outputs = [annotated_record(record, doc) for record, doc in zip(records, docs)]
        if self.output_format == "jsonl":
            return pa.table({"json": [json.dumps(out, ensure_ascii=False) for out in outputs]})
        # every record has at least its text, so the table has a column to append to
        entities = pa.array([out.pop("entities") for out in outputs], type=entities_arrow_type())
        return pa.Table.from_pylist(outputs).append_column("entities", entities)


def _split_address(address: str) -> Tuple[str, int]:
    hostport = address[len("ray://") :] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayEngineError(f"--address '{address}' is not auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def connect(address: Optional[str]) -> bool:
    """Connect to Ray, or start a local instance; reuse one already running in
    this process.

    address (Optional[str]): None (a local instance, or RAY_ADDRESS when set),
        ``auto`` (the cluster running on this machine), ``HOST:PORT`` or
        ``ray://HOST:PORT`` (Ray Client).
    RETURNS (bool): whether this call connected, so the caller disconnects.
    RAISES (RayEngineError): the address does not answer.
    """
    import ray

    if address not in (None, "auto"):
        host, port = _split_address(address)
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise RayEngineError(f"cannot reach the Ray cluster at {address}: {err} (is the head node up, and the port open?)") from None
    if ray.is_initialized():
        return False
    kwargs: Dict[str, Any] = {"address": address}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # A throw-away local instance: the dashboard would only cost start-up time.
        kwargs["include_dashboard"] = False
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise RayEngineError(f"cannot connect to Ray at {address or 'a new local instance'}: {err}") from None
    return True


def default_workers(cpus_per_worker: float, gpus_per_worker: float) -> int:
    """As many actors as the cluster's CPUs (or GPUs, for GPU actors) hold."""
    import ray

    resources = ray.cluster_resources()
    if gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // cpus_per_worker))


@contextmanager
def _data_context(preserve_order: bool) -> Iterator[None]:
    # DataContext is per process; restore it so that a host program (or the
    # next test) sees what it had.
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = preserve_order
    ctx.enable_progress_bars = False  # ours counts records against the known total
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved


def _worker_error(err: BaseException) -> Optional[str]:
    """The WorkerLoadError message inside a Ray error, however wrapped."""
    seen = set()
    stack = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        text = str(e)
        if "WorkerLoadError" in text or isinstance(e, WorkerLoadError):
            for line in text.splitlines():
                if "cannot load pipeline" in line:
                    return line.split("WorkerLoadError: ", 1)[-1].strip()
            return text.strip().splitlines()[-1]
        stack.extend([e.__cause__, e.__context__, getattr(e, "cause", None)])
    return None


class _Writer:
    """Writes annotated batches to one JSONL or Parquet file."""

    def __init__(self, path: Path, output_format: str) -> None:
        self.path = path
        self.output_format = output_format
        self.rows = 0
        self._jsonl = open(path, "wb") if output_format == "jsonl" else None
        self._parquet = None

    def write(self, table) -> None:
        import pyarrow.parquet as pq

        if self._jsonl is not None:
            self._jsonl.write("".join(line + "\n" for line in table.column("json").to_pylist()).encode("utf8"))
        else:
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(str(self.path), table.schema)
            elif table.schema != self._parquet.schema:
                try:
                    table = table.cast(self._parquet.schema)
                except (ValueError, TypeError, NotImplementedError) as err:
                    raise RayEngineError(
                        f"the records' fields differ from the first ones' ({err}); Parquet needs one schema: use --format jsonl"
                    ) from None
            self._parquet.write_table(table)
        self.rows += table.num_rows

    def close(self, empty_schema) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        else:
            import pyarrow.parquet as pq

            if self._parquet is None:
                self._parquet = pq.ParquetWriter(str(self.path), empty_schema)
            self._parquet.close()


def annotate_with_ray(
    model: str,
    inputs: Sequence[Path],
    output_path: Path,
    *,
    fmt: str = "jsonl",
    text_key: str = "text",
    on_error: str = "skip",
    output_format: str = "jsonl",
    address: Optional[str] = None,
    workers: Optional[int] = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    batch_size: int = 64,
    preserve_order: bool = False,
    progress: bool = True,
) -> AnnotateStats:
    """Annotate input files on Ray Data into one JSONL or Parquet file.

    model (str): pipeline name or path, loadable on every Ray node.
    inputs (Sequence[Path]): input files, read in order by the driver.
    output_path (Path): the file to write (through ``OUTPUT.part``).
    fmt (str): input format, ``text`` or ``jsonl``.
    text_key (str): the JSONL key holding the text.
    on_error (str): ``skip`` or ``fail``, as for the local engine; with
        ``fail`` a bad line stops the run before Ray starts any actor.
    output_format (str): ``jsonl`` (the local engine's bytes) or ``parquet``.
    address (Optional[str]): see ``connect``.
    workers (Optional[int]): actors; None: as many as the cluster holds.
    cpus_per_worker (float): CPUs reserved per actor, and its torch threads.
    gpus_per_worker (float): GPUs per actor (0: CPU actors).
    batch_size (int): records per actor call and per ``nlp.pipe`` batch.
    preserve_order (bool): write records in input order (else in the order
        they finish, which keeps all actors busy).
    progress (bool): show a progress bar.
    RETURNS (AnnotateStats): counts; ``written`` is the rows written.
    RAISES (AnnotateError): a bad line with ``on_error="fail"``; RayEngineError
        for an unreachable cluster, a pipeline that does not load on a
        worker, or rows lost on the way.
    """
    import pyarrow as pa
    import ray
    import ray.data
    from ray.exceptions import RayError
    from tqdm import tqdm

    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format is one of {OUTPUT_FORMATS}")
    stats = AnnotateStats()
    started = time.perf_counter()
    # Validate everything before a cluster is touched: --on-error fail stops here.
    # One block per actor call: Ray Data hands a task's output back when the
    # task ends, so bigger blocks would delay the first rows and the progress
    # bar by several batches.
    block_rows = batch_size
    blocks: List[List[str]] = [[]]
    for rec in iter_input_records(inputs, fmt, text_key if fmt == "jsonl" else "text", on_error, stats):
        if len(blocks[-1]) == block_rows:
            blocks.append([])
        blocks[-1].append(json.dumps(rec.record, ensure_ascii=False))
    n_records = sum(len(b) for b in blocks)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    part = output_path.with_name(output_path.name + ".part")
    writer = _Writer(part, output_format)
    empty_schema = pa.schema([("entities", entities_arrow_type())])
    started_ray = connect(address)
    try:
        if n_records:
            n_workers = workers or default_workers(cpus_per_worker, gpus_per_worker)
            refs = [ray.put(pa.table({"record": block})) for block in blocks]
            blocks = []  # the object store holds them now
            # a Dataset copies the DataContext (preserve_order) when it is made: set it first
            with _data_context(preserve_order):
                ds = ray.data.from_arrow_refs(refs).map_batches(
                    PipelineActor,
                    fn_constructor_kwargs={
                        "model": model,
                        "text_key": text_key if fmt == "jsonl" else "text",
                        "output_format": output_format,
                        "threads": max(1, int(cpus_per_worker)),
                        "gpu": gpus_per_worker > 0,
                        "pipe_batch_size": batch_size,
                    },
                    batch_size=batch_size,
                    batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=n_workers),
                    num_cpus=cpus_per_worker,
                    num_gpus=gpus_per_worker,
                )
                with tqdm(total=n_records, disable=not progress, unit=" records") as bar:
                    try:
                        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                            if stats.seconds_to_first_record is None:
                                stats.seconds_to_first_record = time.perf_counter() - started
                            writer.write(table)
                            bar.update(table.num_rows)
                    except RayError as err:
                        raise RayEngineError(_worker_error(err) or f"the Ray job failed: {type(err).__name__}: {str(err).strip().splitlines()[-1]}") from None
    except BaseException:
        writer.close(empty_schema)
        part.unlink(missing_ok=True)
        raise
    else:
        writer.close(empty_schema)
    finally:
        if started_ray:
            ray.shutdown()
    if writer.rows != n_records:
        part.unlink(missing_ok=True)
        raise RayEngineError(f"Ray returned {writer.rows} rows for {n_records} records; nothing written")
    os.replace(part, output_path)
    stats.written = writer.rows
    stats.seconds = time.perf_counter() - started
    return stats
