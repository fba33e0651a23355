"""Batch annotation on Ray Data: ``annotate --engine ray``, streaming.

Nothing of the input passes through the driver, and its memory does not grow
with the input: the driver only builds the plan, hands block references on,
and counts.

Reading. The input files are read by read tasks on the cluster through Ray
Data's file machinery (``FileBasedDatasource``: path resolution, any file
system pyarrow knows, such as ``s3://``, ``gs://``, ``hdfs://``, compressed
files by their extension, retries of I/O errors from the file's start). Ray's
own ``read_json`` and ``read_text`` are not used: ``read_json`` parses a
whole file with pyarrow and fails it at the first bad line, without its line
number; ``read_text`` reads and decodes a whole file in one piece (one
non-UTF-8 byte fails the file, a large file fills the worker's memory) and
splits on every Unicode line boundary. ``LineDatasource`` instead streams
each file line by line (chunks of 1 MiB) through the local engine's own
reader, ``annotate.local.read_records``, so lines, numbers, the BOM, UTF-8
and JSON checks and the bad-line messages are exactly the local engine's. Its
blocks carry the file index and line number of every line read, good or bad,
the record (as JSON) and the problem of a bad line; a block holds
``batch_size`` good lines (and the bad ones among them), and it is one actor
call and one ``nlp.pipe`` batch (``map_batches(batch_size=None)``, blocks not
split). With ``--preserve-order`` one read task reads the files one after
the other and a block runs on from one file into the next, so the actors
predict exactly the local engine's batches, and the output has its bytes
(where the pipeline predicts batch by batch, ``sort_buffer_tokens = 0``; a
sort buffer regroups texts across batches in the local engine, and scores
then differ in float32's last digits, as they did before streaming). Without
it, one read task per file, in parallel.
Parquet inputs are read row group by row group; a row's "line" is its
1-based row number and a row without a string under the text key is bad.
Read tasks reserve no CPU (reading is light next to annotating, and a read
task holding a CPU for a whole file would keep an actor from starting); at
most one runs per actor. On a cluster of several nodes, plain local paths are
read on the driver's node, so they need no shared file system (what Ray's
deprecated ``local://`` scheme did); over Ray Client (``ray://``) Ray cannot
schedule on the client machine: there local paths must exist on the
cluster's nodes, or be URIs.

Annotating. A pool of actors annotates the blocks (``Dataset.map_batches``
with ``ActorPoolStrategy``): each actor loads the pipeline once, by name or
path, in its ``__init__`` (nothing is pickled and shipped but the name), with
``torch.set_num_threads`` set to its CPUs. Bad lines go through untouched,
so their FILE:LINE and reason reach the writer in the stream.

Writing. One writer actor, placed on the driver's node (``num_cpus=0``),
writes the one output file (JSONL with the local engine's exact bytes, or
Parquet) to a hidden temporary sibling of OUTPUT (``atomic_output``). The
driver iterates the annotated dataset's block *references*
(``iter_internal_ref_bundles``) and passes them to the writer, at most a few
in flight: the blocks go from the object store to the writer, never into the
driver. Actor calls from one caller run in call order, so with
``--preserve-order`` the file is in input order (the writer checks that every
record comes after the previous one and fails the run otherwise). At the end
the writer returns the counts and the bad lines (FILE:LINE, sorted into input
order), the driver checks the counts and renames the file into place: an
error anywhere leaves no output and no temporary. Over Ray Client the output
belongs on the client machine, so there the driver itself writes, fetching
one block at a time.

Bad lines. ``--on-error skip`` counts and reports each as the local engine
does. ``--on-error fail`` stops the run at the first bad line its read task
meets (the first of its file; with several files read in parallel it may not
be the first of the whole input) and writes nothing; unlike the engine before
streaming, the actors may have started by then.

Needs the ``ray`` extra: ``pip install 'spacy-ner-plus[ray]'``.

Size: one engine in three Ray parts that share one column layout (the streaming line
reader, a ``FileBasedDatasource`` pickled by reference to this module's global; the
annotating actor; the writer actor) and the driver that wires them; the docstring above
explains the choices they make together.
"""
import json
import os
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ..training.corpus import Problem
from .atomic_output import atomic_file
from .local import INPUT_FORMATS, ON_ERROR, AnnotateError, AnnotateStats, BadLineError, annotated_record, read_records

OUTPUT_FORMATS = ("jsonl", "parquet")
# The input formats of this engine: the local engine's and Parquet.
RAY_INPUT_FORMATS = INPUT_FORMATS + ("parquet",)
# The columns that travel with every line from the reader to the writer;
# names no user record is likely to hold (an output record with one of them
# would lose it in Parquet output).
FILE_COL, LINE_COL, RECORD_COL, PROBLEM_COL, JSON_COL = "__snp_file", "__snp_line", "__snp_record", "__snp_problem", "__snp_json"
META_COLS = (FILE_COL, LINE_COL, PROBLEM_COL)
READ_CHUNK = 1 << 20
# Blocks handed to the writer and not yet written: bounds what the stream
# holds for it, whatever the input's size.
WRITES_IN_FLIGHT = 4
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
    """A Ray Data actor that annotates blocks of ``LineDatasource`` with one
    pipeline: the good lines' records, in one ``nlp.pipe`` batch; the bad
    lines pass with their file, line and problem.

    model (str): pipeline name or path, loaded here with ``spacy.load``; it
        must be loadable on every node (an installed pipeline package, or a
        path on a shared file system).
    text_key (str): the key of the text in each record.
    output_format (str): ``jsonl`` (a column with each output line, null
        for a bad line) or ``parquet`` (the record's fields plus
        ``entities``, then the bad lines with their position only); both
        with the file, line and problem columns.
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

        problems = batch.column(PROBLEM_COL).to_pylist()
        good = [i for i, problem in enumerate(problems) if problem is None]
        texts = batch.column(RECORD_COL).to_pylist()
        records = [json.loads(texts[i]) for i in good]
        docs = self.nlp.pipe((r[self.text_key] for r in records), batch_size=self.pipe_batch_size)
        outputs = [annotated_record(record, doc) for record, doc in zip(records, docs)]
        meta = batch.select(list(META_COLS))
        if self.output_format == "jsonl":
            lines: List[Optional[str]] = [None] * batch.num_rows
            for i, out in zip(good, outputs):
                lines[i] = json.dumps(out, ensure_ascii=False)
            return meta.append_column(JSON_COL, pa.array(lines, type=pa.string()))
        # Parquet: the good records' fields and typed entities, then the bad
        # lines with their position and problem only (the writer drops them)
        good_meta = meta.take(pa.array(good, type=pa.int64()))
        bad_meta = meta.filter(batch.column(PROBLEM_COL).is_valid())
        if not outputs:
            return bad_meta
        entities = pa.array([out.pop("entities") for out in outputs], type=entities_arrow_type())
        table = pa.Table.from_pylist(outputs).append_column("entities", entities)
        for name in META_COLS:
            table = table.append_column(name, good_meta.column(name))
        return pa.concat_tables([table, bad_meta], promote_options="default") if bad_meta.num_rows else table


def _lines(f, chunk: int = READ_CHUNK) -> Iterator[bytes]:
    """The lines of a binary stream, each with its ``\\n`` (the last one
    without, where the file does not end with one): what iterating a file
    opened with ``open(path, "rb")`` gives, for pyarrow streams that cannot
    iterate."""
    rest = b""
    while True:
        data = f.read(chunk)
        if not data:
            break
        pieces = (rest + data).split(b"\n")
        rest = pieces.pop()
        for piece in pieces:
            yield piece + b"\n"
    if rest:
        yield rest


def _datasource_class():
    # Defined on first use: importing this module must not import Ray.
    global LineDatasource
    if "LineDatasource" in globals():
        return LineDatasource
    from ray.data.datasource import FileBasedDatasource

    class LineDatasource(FileBasedDatasource):  # noqa: F811 (bound to the module's global)
        """Reads input files line by line (Parquet: row by row) in read
        tasks, into blocks of ``batch_size`` good lines (with the bad lines
        met among them): file index, line number, the record as JSON (null
        for a bad line), the problem (null for a good one). See the module
        docstring.

        paths (List[str]): the files (local paths or URIs), in input order.
        names (List[str]): how messages name each file (as the user gave it).
        fmt (str): ``text``, ``jsonl`` or ``parquet``.
        text_key (str): the key of the text (``text`` for plain text).
        on_error (str): ``skip`` or ``fail`` (raise BadLineError in the read task).
        batch_size (int): good lines per block.
        single_stream (bool): one read task reads every file in order, and
            blocks run on across files, so the blocks are the local engine's
            batches; else one read task per file, in parallel.
        filesystem: a pyarrow file system, or None to infer it from the paths.
        """

        def __init__(
            self, paths: List[str], names: List[str], fmt: str, text_key: str, on_error: str, batch_size: int, single_stream: bool, filesystem=None
        ) -> None:
            super().__init__(paths, filesystem=filesystem)
            resolved = self._paths()
            # A folder or a URI prefix expands to its files: name those.
            self._names = list(names) if len(resolved) == len(names) else list(resolved)
            self._index = {path: i for i, path in enumerate(resolved)}
            self._fmt, self._text_key, self._on_error, self._batch_size = fmt, text_key, on_error, batch_size
            self._single_stream = single_stream
            # single stream: the rows of an unfinished block that file i
            # starts with; set once, when file i - 1 ends, and only read
            # after, so that a retried file replays the same blocks
            self._carry_in: Dict[int, Dict[str, list]] = {}

        def file_names(self) -> List[str]:
            return list(self._names)

        def read_tasks_wanted(self) -> int:
            return 1 if self._single_stream else len(self._names)

        def get_read_tasks(self, parallelism: int, *args, **kwargs):
            return super().get_read_tasks(self.read_tasks_wanted(), *args, **kwargs)

        def _open_input_source(self, filesystem, path: str, **open_args):
            if self._fmt == "parquet":  # footer first: needs random access
                return filesystem.open_input_file(path)
            return super()._open_input_source(filesystem, path, **open_args)

        def _read_stream(self, f, path: str):
            import pyarrow as pa

            index = self._index[path]
            name = self._names[index]
            schema = pa.schema([(FILE_COL, pa.int64()), (LINE_COL, pa.int64()), (RECORD_COL, pa.string()), (PROBLEM_COL, pa.string())])
            carried = self._carry_in.get(index) if self._single_stream else None
            rows: Dict[str, list] = {k: list(v) for k, v in carried.items()} if carried else {name_: [] for name_ in schema.names}
            good = sum(1 for problem in rows[PROBLEM_COL] if problem is None)
            for line, record, problem in self._records(f, name):
                rows[FILE_COL].append(index)
                rows[LINE_COL].append(line)
                rows[RECORD_COL].append(record)
                rows[PROBLEM_COL].append(problem)
                good += problem is None
                if good == self._batch_size:
                    yield pa.table(rows, schema=schema)
                    rows = {name_: [] for name_ in schema.names}
                    good = 0
            if self._single_stream and index + 1 < len(self._names):
                self._carry_in[index + 1] = rows  # the next file goes on filling this block
            elif rows[LINE_COL]:
                yield pa.table(rows, schema=schema)

        def _records(self, f, name: str) -> Iterator[Tuple[int, Optional[str], Optional[str]]]:
            """(line, record JSON or None, problem or None) of every line."""
            if self._fmt == "parquet":
                yield from self._parquet_records(f, name)
                return
            stats = AnnotateStats()
            for rec in read_records(_lines(f), name, self._fmt, self._text_key, self._on_error, stats):
                # bad lines before this record, in order; the list is
                # emptied so that a read task's memory does not grow
                for problem in stats.skipped:
                    yield problem.line, None, problem.message
                stats.skipped.clear()
                yield rec.line, json.dumps(rec.record, ensure_ascii=False), None
            for problem in stats.skipped:
                yield problem.line, None, problem.message

        def _parquet_records(self, f, name: str) -> Iterator[Tuple[int, Optional[str], Optional[str]]]:
            import pyarrow.parquet as pq

            line = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=max(self._batch_size, 1024)):
                for row in batch.to_pylist():
                    line += 1
                    if not isinstance(row.get(self._text_key), str):
                        problem = f"no string under the column '{self._text_key}'"
                        if self._on_error == "fail":
                            raise BadLineError(str(Problem(name, line, problem)))
                        yield line, None, problem
                    else:
                        # values JSON has no type for (dates, bytes, decimals) as strings
                        yield line, json.dumps(row, ensure_ascii=False, default=str), None

    # pickled by reference (the module's global), not by value
    LineDatasource.__qualname__ = "LineDatasource"
    return LineDatasource


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


def __getattr__(name: str):
    # ``LineDatasource`` subclasses a Ray class, so it is made on first use;
    # unpickling it in a read task finds it here.
    if name == "LineDatasource":
        return _datasource_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OutputWriter:
    """Writes annotated blocks to one JSONL or Parquet file and counts the
    lines they stand for; runs as a Ray actor on the driver's node (or, over
    Ray Client, in the driver).

    path (str): the file to write (a temporary, renamed by the driver).
    output_format (str): ``jsonl`` or ``parquet``.
    check_order (bool): fail when a record comes before the previous one.
    """

    def __init__(self, path: str, output_format: str, check_order: bool) -> None:
        self.path = path
        self.output_format = output_format
        self.check_order = check_order
        self.read = 0
        self.written = 0
        self.problems: List[Tuple[int, int, str]] = []
        self.last: Tuple[int, int] = (-1, 0)
        # per file: lines seen and the highest line number; equal when no
        # line was lost or doubled on the way
        self.lines: Dict[int, List[int]] = {}
        self._jsonl = open(path, "wb") if output_format == "jsonl" else None
        self._parquet = None

    def ready(self) -> bool:
        return True

    def write(self, table) -> int:
        """Write a block's good records; keep its bad lines. Returns its rows."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        bad = table.filter(table.column(PROBLEM_COL).is_valid())
        good = table.filter(table.column(PROBLEM_COL).is_null()) if bad.num_rows else table
        self.problems.extend(zip(*(bad.column(c).to_pylist() for c in META_COLS)))
        self.read += table.num_rows
        import pyarrow as pa

        for group in pa.TableGroupBy(table.select([FILE_COL, LINE_COL]), FILE_COL).aggregate([(LINE_COL, "count"), (LINE_COL, "max")]).to_pylist():
            seen = self.lines.setdefault(group[FILE_COL], [0, 0])
            seen[0] += group[f"{LINE_COL}_count"]
            seen[1] = max(seen[1], group[f"{LINE_COL}_max"])
        if self.check_order and good.num_rows:
            first = (good.column(FILE_COL)[0].as_py(), good.column(LINE_COL)[0].as_py())
            key = pc.add(pc.multiply(good.column(FILE_COL), 1 << 40), good.column(LINE_COL))
            increasing = good.num_rows == 1 or pc.all(pc.greater(key[1:], key[:-1])).as_py()
            if first <= self.last or not increasing:
                raise RayEngineError(f"Ray delivered records out of input order (at file {first[0]}, line {first[1]}); nothing written")
            self.last = (good.column(FILE_COL)[-1].as_py(), good.column(LINE_COL)[-1].as_py())
        if self._jsonl is not None:
            self._jsonl.write("".join(line + "\n" for line in good.column(JSON_COL).to_pylist()).encode("utf8"))
        elif good.num_rows:
            good = good.drop_columns(list(META_COLS))
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, good.schema)
            elif good.schema != self._parquet.schema:
                try:
                    good = good.cast(self._parquet.schema)
                except (ValueError, TypeError, NotImplementedError) as err:
                    raise RayEngineError(
                        f"the records' fields differ from the first ones' ({err}); Parquet needs one schema: use --format jsonl"
                    ) from None
            self._parquet.write_table(good)
        self.written += good.num_rows
        return table.num_rows

    def close(self) -> Dict[str, Any]:
        """Close the file; the counts and the bad lines (file index, line,
        problem) in input order."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._jsonl is not None:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
            self._jsonl.close()
        else:
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, pa.schema([("entities", entities_arrow_type())]))
            self._parquet.close()
        lost = sorted(file for file, (count, last) in self.lines.items() if count != last)
        return {"read": self.read, "written": self.written, "problems": sorted(self.problems), "files_with_gaps": lost}


def _bad_line_error(err: BaseException) -> Optional[str]:
    """The BadLineError message (FILE:LINE: reason) inside a Ray error."""
    found = re.search(r"BadLineError: (.+)", str(err))
    return found.group(1).strip() if found else None


def _read_options(inputs: Sequence[Union[str, Path]], read_tasks: int, n_workers: int, client: bool) -> Dict[str, Any]:
    """``read_datasource`` options: read tasks reserve no CPU (reading is
    light next to annotating, and a long read task holding a CPU would keep
    an actor from starting), at most one per actor; their blocks are not
    split (they are the actors' batches); on a cluster of several
    nodes, local paths are read on this node (Ray's ``local://`` scheme did
    this and is deprecated)."""
    import inspect

    import ray
    import ray.data
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: Dict[str, Any] = {"concurrency": max(1, min(read_tasks, n_workers)), "override_num_blocks": read_tasks}
    remote: Dict[str, Any] = {}
    local_paths = any("://" not in str(p) for p in inputs)
    if local_paths and not client and sum(1 for n in ray.nodes() if n.get("Alive")) > 1:
        remote["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    if remote or "num_cpus" not in inspect.signature(ray.data.read_datasource).parameters:
        options["ray_remote_args"] = {"num_cpus": 0, **remote}
    else:
        options["num_cpus"] = 0
    return options


def annotate_with_ray(
    model: str,
    inputs: Sequence[Union[str, Path]],
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
    filesystem=None,
) -> AnnotateStats:
    """Annotate input files on Ray Data into one JSONL or Parquet file,
    streaming (see the module docstring).

    model (str): pipeline name or path, loadable on every Ray node.
    inputs (Sequence[Union[str, Path]]): input files, local paths or URIs of
        any file system pyarrow knows (``s3://bucket/a.jsonl``), in order.
    output_path (Path): the file to write, on this machine (through a hidden
        temporary sibling renamed at the end).
    fmt (str): input format, ``text``, ``jsonl`` or ``parquet``.
    text_key (str): the JSONL key (Parquet column) holding the text.
    on_error (str): ``skip`` or ``fail``, as for the local engine.
    output_format (str): ``jsonl`` (the local engine's bytes) or ``parquet``.
    address (Optional[str]): see ``connect``.
    workers (Optional[int]): actors; None: as many as the cluster holds.
    cpus_per_worker (float): CPUs reserved per actor, and its torch threads.
    gpus_per_worker (float): GPUs per actor (0: CPU actors).
    batch_size (int): lines per block, per actor call and per ``nlp.pipe`` batch.
    preserve_order (bool): write records in input order (else in the order
        they finish, which keeps all actors busy).
    progress (bool): show a progress bar (lines read, good and bad).
    filesystem: a ``pyarrow.fs.FileSystem`` for the inputs (None: from the
        paths).
    RETURNS (AnnotateStats): counts; ``written`` is the rows written.
    RAISES (AnnotateError): BadLineError for a bad line with
        ``on_error="fail"``; RayEngineError for an unreachable cluster, a
        pipeline that does not load on a worker, or rows lost on the way.
    """
    import ray
    import ray.data
    from ray.exceptions import RayError
    from ray.util.client import ray as client_ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from tqdm import tqdm

    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format is one of {OUTPUT_FORMATS}")
    if fmt not in RAY_INPUT_FORMATS or on_error not in ON_ERROR:
        raise ValueError(f"the input format is one of {RAY_INPUT_FORMATS} and on_error one of {ON_ERROR}")
    if not inputs:
        raise ValueError("no input files")
    stats = AnnotateStats()
    started = time.perf_counter()
    key = text_key if fmt != "text" else "text"
    started_ray = connect(address)
    writer = None
    try:
        client = client_ray.is_connected()
        n_workers = workers or default_workers(cpus_per_worker, gpus_per_worker)
        with atomic_file(output_path) as tmp, _data_context(preserve_order):
            # a Dataset copies the DataContext (preserve_order) when it is made: set it first
            try:
                paths = [str(p) if "://" in str(p) else os.path.abspath(p) for p in inputs]
                source = _datasource_class()(paths, [str(p) for p in inputs], fmt, key, on_error, batch_size, preserve_order, filesystem=filesystem)
            except (OSError, ValueError) as err:
                raise AnnotateError(f"cannot read the inputs: {err}") from None
            names = source.file_names()
            ds = ray.data.read_datasource(source, **_read_options(inputs, source.read_tasks_wanted(), n_workers, client))
            ds = ds.map_batches(
                PipelineActor,
                fn_constructor_kwargs={
                    "model": model,
                    "text_key": key,
                    "output_format": output_format,
                    "threads": max(1, int(cpus_per_worker)),
                    "gpu": gpus_per_worker > 0,
                    "pipe_batch_size": batch_size,
                },
                batch_size=None,  # a block is a batch: batch_size good lines, see LineDatasource
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=n_workers),
                num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker,
            )
            if client:
                # the output belongs on the client machine: write here, one block at a time
                local = OutputWriter(str(tmp), output_format, preserve_order)
                submit = lambda ref: ray.put(local.write(ray.get(ref)))  # noqa: E731
                close = local.close
            else:
                node = ray.get_runtime_context().get_node_id()
                writer = (
                    ray.remote(OutputWriter)
                    .options(num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                    .remote(str(tmp), output_format, preserve_order)
                )
                submit = writer.write.remote
                close = lambda: ray.get(writer.close.remote())  # noqa: E731
            pending: List[Any] = []
            with tqdm(disable=not progress, unit=" lines") as bar:
                try:
                    for bundle in ds.iter_internal_ref_bundles():
                        if stats.seconds_to_first_record is None:
                            stats.seconds_to_first_record = time.perf_counter() - started
                        for ref in bundle.block_refs:
                            pending.append(submit(ref))
                        while len(pending) > WRITES_IN_FLIGHT:
                            done, pending = ray.wait(pending, num_returns=1)
                            bar.update(ray.get(done[0]))
                        del bundle
                    for rows in ray.get(pending):
                        bar.update(rows)
                    result = close()
                except RayError as err:
                    bad = _bad_line_error(err)
                    if bad:
                        raise BadLineError(bad) from None
                    raise RayEngineError(_worker_error(err) or f"the Ray job failed: {type(err).__name__}: {str(err).strip().splitlines()[-1]}") from None
            stats.read = result["read"]
            stats.written = result["written"]
            stats.skipped = [Problem(names[file], line, message) for file, line, message in result["problems"]]
            if result["files_with_gaps"]:
                gaps = ", ".join(names[i] for i in result["files_with_gaps"])
                raise RayEngineError(f"lines of {gaps} were lost or doubled on the way through Ray; nothing written")
    finally:
        if writer is not None:
            ray.kill(writer)
        if started_ray:
            ray.shutdown()
    stats.seconds = time.perf_counter() - started
    return stats
