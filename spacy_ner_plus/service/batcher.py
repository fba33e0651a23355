"""The micro-batcher: one thread owns every call into the pipeline (tokenizer included);
request handlers queue texts and it predicts what arrived together with one ``nlp.pipe`` call."""
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple


# --- the micro-batcher ------------------------------------------------------------
class QueueFull(RuntimeError):
    """More texts are waiting than the service queues."""


class MicroBatcher:
    """The one thread that calls the pipeline: texts queued by any request within
    ``max_wait_s`` of the oldest are predicted together in one ``nlp.pipe`` call.

    nlp (Language): the pipeline (only this thread touches it).
    extract (Callable[[Doc], Any]): turns a predicted Doc into plain data, in this thread.
    batch_tokens (int): a batch stops taking texts once it holds this many tokens.
    max_wait_s (float): the longest the oldest text of a batch waits for company.
    max_queue (int): most texts waiting; ``submit`` raises QueueFull beyond.
    on_batch (Optional[Callable[[int, int], None]]): called with (texts, tokens) per batch (metrics).
    """

    def __init__(self, nlp, extract: Callable[[Any], Any], batch_tokens: int, max_wait_s: float, max_queue: int, on_batch: Optional[Callable[[int, int], None]] = None) -> None:
        self.nlp = nlp
        self.extract = extract
        self.batch_tokens = batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._pending: Deque[Tuple[str, Future, float]] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="ner-plus-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, texts: Sequence[str]) -> List[Future]:
        """Queue ``texts``; each Future gets the ``extract`` result of its text.

        RAISES (QueueFull): the queue cannot take all of them (none is queued).
        """
        now = time.monotonic()
        futures: List[Future] = [Future() for _ in texts]
        with self._cond:
            if self._closing:
                raise QueueFull("the service is shutting down")
            if len(self._pending) + len(texts) > self.max_queue:
                raise QueueFull(f"{len(self._pending)} texts are waiting (at most {self.max_queue})")
            self._pending.extend((text, fut, now) for text, fut in zip(texts, futures))
            self._cond.notify()
        return futures

    def close(self, timeout: float) -> None:
        """Predict what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _next_batch(self) -> Optional[List[Tuple[Any, Future]]]:
        """Texts for one nlp.pipe call as (Doc, Future); None once closed and empty.

        Everything already queued joins the batch up to the token budget; the
        wait for more ends ``max_wait_s`` after the oldest text arrived."""
        batch: List[Tuple[Any, Future]] = []
        tokens = 0
        deadline = 0.0
        while True:
            with self._cond:
                if not batch:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return None
                else:
                    while not self._pending and not self._closing:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                    if not self._pending:
                        return batch
                text, fut, arrived = self._pending.popleft()
            if not batch:
                deadline = arrived + self.max_wait_s
            if not fut.set_running_or_notify_cancel():
                continue  # its request is gone
            try:
                doc = self.nlp.make_doc(text)
            except Exception as err:  # e.g. longer than nlp.max_length: this text's own failure
                fut.set_exception(err)
                continue
            batch.append((doc, fut))
            tokens += len(doc)
            if tokens >= self.batch_tokens:
                return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if self.on_batch is not None:
                self.on_batch(len(batch), sum(len(doc) for doc, _ in batch))
            try:
                results = [self.extract(doc) for doc in self.nlp.pipe([doc for doc, _ in batch], batch_size=len(batch))]
            except Exception:
                # One text broke the batch: predict each on its own (fresh Docs, since a
                # half-annotated Doc would carry entities into the next run), so only
                # the request that sent it fails.
                for doc, fut in batch:
                    try:
                        fresh = self.nlp.make_doc(doc.text)
                        fut.set_result(self.extract(next(iter(self.nlp.pipe([fresh])))))
                    except Exception as err:
                        fut.set_exception(err)
                continue
            for (_, fut), result in zip(batch, results):
                fut.set_result(result)
