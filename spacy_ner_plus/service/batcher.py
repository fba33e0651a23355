"""The micro-batchers: request handlers queue texts, and a batcher thread predicts what arrived
together with one ``nlp.pipe`` call (tokenizer included). ``Lanes`` runs two of them, one for
short texts and one for long ones, so a long text holds up only the long texts behind it."""
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple


# --- the micro-batcher ------------------------------------------------------------
class QueueFull(RuntimeError):
    """More work is waiting than the service queues."""


class DeadlineExceeded(RuntimeError):
    """A queued text's request deadline passed before the batcher reached it."""


class _Item:
    __slots__ = ("text", "future", "arrived", "deadline")

    def __init__(self, text: str, future: Future, arrived: float, deadline: Optional[float]) -> None:
        self.text = text
        self.future = future
        self.arrived = arrived
        self.deadline = deadline


class MicroBatcher:
    """The one thread that calls the pipeline: texts queued by any request within
    ``max_wait_s`` of the oldest are predicted together in one ``nlp.pipe`` call.

    The queue is measured in characters, the unit of work (a 100 KB text costs what
    a thousand short ones do), and every text carries its request's deadline: a text
    whose deadline has passed when the batcher reaches it is dropped, not predicted.

    nlp (Language): the pipeline (only this thread touches it).
    extract (Callable[[Doc], Any]): turns a predicted Doc into plain data, in this thread.
    batch_tokens (int): a batch stops taking texts once it holds this many tokens.
    max_wait_s (float): the longest the oldest text of a batch waits for company.
    max_queue_chars (int): most characters waiting; ``submit`` raises QueueFull beyond.
    on_batch (Optional[Callable[[int, int], None]]): called with (texts, tokens) per batch (metrics).
    on_expired (Optional[Callable[[int], None]]): called with the number of texts dropped because
        their deadline passed (metrics).
    name (str): names the thread (ner-plus-batcher-NAME).
    """

    def __init__(
        self,
        nlp,
        extract: Callable[[Any], Any],
        batch_tokens: int,
        max_wait_s: float,
        max_queue_chars: int,
        on_batch: Optional[Callable[[int, int], None]] = None,
        on_expired: Optional[Callable[[int], None]] = None,
        name: str = "main",
    ) -> None:
        self.nlp = nlp
        self.extract = extract
        self.batch_tokens = batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue_chars = max_queue_chars
        self.on_batch = on_batch
        self.on_expired = on_expired
        self._cond = threading.Condition()
        self._pending: Deque[_Item] = deque()
        self._queued_chars = 0
        self._busy = False  # a batch is being tokenized or predicted
        self._last_progress = time.monotonic()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"ner-plus-batcher-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued_chars(self) -> int:
        return self._queued_chars

    def submit(self, texts: Sequence[str], deadline: Optional[float] = None) -> List[Future]:
        """Queue ``texts``; each Future gets the ``extract`` result of its text, or
        DeadlineExceeded when ``deadline`` (a ``time.monotonic()`` value) passes first.

        RAISES (QueueFull): the queue cannot take all of them (none is queued).
        """
        now = time.monotonic()
        futures: List[Future] = [Future() for _ in texts]
        chars = sum(len(t) for t in texts)
        with self._cond:
            if self._closing:
                raise QueueFull("the service is shutting down")
            if self._queued_chars + chars > self.max_queue_chars:
                raise QueueFull(f"{self._queued_chars} characters are waiting; {chars} more would pass the limit of {self.max_queue_chars}")
            if not self._pending and not self._busy:
                self._last_progress = now  # an idle batcher has not stalled
            self._pending.extend(_Item(text, fut, now, deadline) for text, fut in zip(texts, futures))
            self._queued_chars += chars
            self._cond.notify()
        return futures

    def stalled_for(self) -> float:
        """Seconds since the batcher last finished a batch while work waited (0 when idle)."""
        with self._cond:
            if not self._pending and not self._busy:
                return 0.0
            return time.monotonic() - self._last_progress

    def close(self, timeout: float) -> None:
        """Predict what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _expire(self, fut: Future) -> None:
        self._last_progress = time.monotonic()  # dropping a text is progress too
        if fut.set_running_or_notify_cancel():
            fut.set_exception(DeadlineExceeded("the request's deadline passed while its text was queued"))
        if self.on_expired is not None:
            self.on_expired(1)

    def _next_batch(self) -> Optional[List[Tuple[Any, _Item]]]:
        """Texts for one nlp.pipe call as (Doc, item); None once closed and empty.

        Everything already queued joins the batch up to the token budget; the
        wait for more ends ``max_wait_s`` after the oldest text arrived."""
        batch: List[Tuple[Any, _Item]] = []
        tokens = 0
        deadline = 0.0
        while True:
            with self._cond:
                if not batch:
                    self._busy = False
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return None
                    self._busy = True
                else:
                    while not self._pending and not self._closing:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                    if not self._pending:
                        return batch
                item = self._pending.popleft()
                self._queued_chars -= len(item.text)
            if not batch:
                deadline = item.arrived + self.max_wait_s
            if item.deadline is not None and time.monotonic() >= item.deadline:
                self._expire(item.future)
                continue
            if not item.future.set_running_or_notify_cancel():
                continue  # its request is gone
            try:
                doc = self.nlp.make_doc(item.text)
            except Exception as err:  # e.g. longer than nlp.max_length: this text's own failure
                item.future.set_exception(err)
                continue
            batch.append((doc, item))
            tokens += len(doc)
            if tokens >= self.batch_tokens:
                return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:
                self._progress()
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), sum(len(doc) for doc, _ in batch))
            try:
                results = [self.extract(doc) for doc in self.nlp.pipe([doc for doc, _ in batch], batch_size=len(batch))]
            except Exception:
                # One text broke the batch: predict each on its own (fresh Docs, since a
                # half-annotated Doc would carry entities into the next run), so only
                # the request that sent it fails.
                for doc, item in batch:
                    if item.deadline is not None and time.monotonic() >= item.deadline:
                        item.future.set_exception(DeadlineExceeded("the request's deadline passed"))
                        continue
                    try:
                        fresh = self.nlp.make_doc(doc.text)
                        item.future.set_result(self.extract(next(iter(self.nlp.pipe([fresh])))))
                    except Exception as err:
                        item.future.set_exception(err)
                self._progress()
                continue
            for (_, item), result in zip(batch, results):
                item.future.set_result(result)
            self._progress()

    def _progress(self) -> None:
        with self._cond:
            self._last_progress = time.monotonic()


class Lanes:
    """Two micro-batchers, each with its own thread: texts of at most ``long_chars``
    characters go to the short lane, longer ones to the long lane. A pipeline's prediction
    is thread-safe, so both lanes predict at once; a short text then waits for at most one
    batch of short texts while a long text is being predicted (the two share the cores
    meanwhile), instead of for the whole long text.

    make (Callable[[str], MicroBatcher]): builds the batcher of a lane, given its name.
    long_chars (int): the longest text the short lane takes.
    """

    def __init__(self, make: Callable[[str], MicroBatcher], long_chars: int) -> None:
        self.long_chars = long_chars
        self.short = make("short")
        self.long = make("long")

    def start(self) -> None:
        self.short.start()
        self.long.start()

    @property
    def queued_chars(self) -> int:
        return self.short.queued_chars + self.long.queued_chars

    def submit(self, texts: Sequence[str], deadline: Optional[float] = None) -> List[Future]:
        """Queue each text on its lane; the Futures in the order of ``texts``.

        RAISES (QueueFull): a lane cannot take its texts (none of the request's texts stays queued).
        """
        short = [i for i, t in enumerate(texts) if len(t) <= self.long_chars]
        long = [i for i, t in enumerate(texts) if len(t) > self.long_chars]
        futures: List[Optional[Future]] = [None] * len(texts)
        submitted: List[Future] = []
        try:
            for lane, indices in ((self.short, short), (self.long, long)):
                if indices:
                    for i, fut in zip(indices, lane.submit([texts[i] for i in indices], deadline)):
                        futures[i] = fut
                        submitted.append(fut)
        except QueueFull:
            for fut in submitted:
                fut.cancel()  # still queued: its batcher skips it
            raise
        return futures  # type: ignore[return-value]

    def stalled_for(self) -> float:
        """Seconds the slower lane has finished no batch while work waited (0 when both are idle)."""
        return max(self.short.stalled_for(), self.long.stalled_for())

    def close(self, timeout: float) -> None:
        """Predict what is queued on both lanes, then stop their threads."""
        self.short.close(timeout)
        self.long.close(timeout)
