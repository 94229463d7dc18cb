"""Checkpoints: an atomic snapshot of the Processor's state, and resuming from it.

A checkpoint is the Processor's state between two ``apply`` calls: queued
work (work that was in flight is queued again), the open reductions with
their stores, the results kept for ``run()``/``finish``, the position in the
input, the statistics.  The runner asks a :class:`Checkpointer` to take one
every ``checkpointInterval`` seconds, when a job forces one, or when a
signal (SIGTERM, SIGINT, SIGUSR1) asks the run to stop.

File format (``PATH``), checked entirely before anything is unpickled::

    JOB_STREAM CHECKPOINT\\n              magic
    {"format": 1, "fingerprint": ..., "version": ..., "length": N,
     "sha256": ..., "taken": ..., "summary": {...}}\\n    one JSON line
    N bytes of pickles                     the state, part by part

The parts share one pickle memo (one ``Pickler``, one ``dump`` per part), so
references between them (work queued for a reduction, a reduction and its
parent) survive, and the size of each part can be reported.

Writes are atomic: ``PATH.new`` is written and fsync'ed, then renamed over
``PATH``.  The state is pickled in the run loop (it must not change while
pickled); the write itself happens in a background thread, so workers keep
running.  ``PATH.journal`` lists results handed to the result handler since
the last checkpoint, so that after a crash they are not handed out again.
On success ``PATH`` is removed and ``PATH.done`` written.
"""
from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import os
import pickle
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Optional

from .errors import JobStreamError, short_repr

MAGIC = b'JOB_STREAM CHECKPOINT\n'
FORMAT = 1
# Items of the input whose hash is kept to detect an input that does not
# replay the same way on resume.  A handful is enough to catch a reordered
# listing; each costs one pickle per checkpoint, not per item.
INPUT_WINDOW = 8
# The JSON header line is short; refuse to read more than this looking for it.
MAX_HEADER = 1 << 20
PARTS = ('stores', 'queue', 'input', 'results', 'stats')


class CheckpointError(JobStreamError):
    """A checkpoint cannot be read, resumed from, or written."""


class CheckpointExit(SystemExit):
    """The run stopped on purpose right after a checkpoint (signal or forced);
    re-running the same command resumes it.  Exit status 1.

    ``quiet``: exit with status 1 without printing ``message`` (MPI ranks
    other than 0, where rank 0 already said it)."""

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(1 if quiet else message)
        self.message, self.quiet = message, quiet

    def __reduce__(self):
        return type(self), (self.message, self.quiet)


# -- one checkpointed run per process -----------------------------------------
_runs = {'any': False, 'checkpointed': False}


def note_run(checkpointed: bool) -> None:
    """Refuse a second run in a process where one is checkpointed."""
    if _runs['checkpointed'] or (checkpointed and _runs['any']):
        raise ValueError(
            'Cannot run more than one job_stream when using checkpoints: a '
            'checkpoint resumes the one run of a process, so a script that '
            'uses checkpoints must call run() (Work, map, common.run) only '
            'once. Merge the runs into one pipeline, or use separate scripts.')
    _runs['any'] = True
    _runs['checkpointed'] = _runs['checkpointed'] or checkpointed


# -- signals on MPI ranks other than 0 --------------------------------------------
# The signals that make a checkpointed run checkpoint and exit.
_STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT,
                                  getattr(signal, 'SIGUSR1', None))
                      if s is not None)


class DeferredSignals:
    """On an MPI rank > 0 of a checkpointed run: SIGTERM, SIGINT and SIGUSR1
    (which ``mpiexec`` forwards to every rank) must not kill the rank while
    rank 0 writes the checkpoint they asked for, so they are noted and the
    rank goes on serving until rank 0 ends the run; if the run ends without
    stopping for it, it is raised again then.  A second SIGINT exits at once
    (status 130), as on rank 0.  Use as a context manager."""

    def __init__(self):
        self._old: dict = {}
        self.received: Optional[int] = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in _STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            os._exit(130)
        self.received = signum

    def __exit__(self, exc_type, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        if self.received is not None and exc_type is None:
            # the run ended without stopping for it (sent to this rank
            # alone, or too late): act on it now, as without deferral
            os.kill(os.getpid(), self.received)


# -- the file ------------------------------------------------------------------
def encode(parts: list) -> tuple:
    """Pickle ``[(name, obj), ...]`` with one shared memo; return
    ``(payload, sizes)``.  Plain pickle first, cloudpickle if it refuses."""
    try:
        return _encode(pickle.Pickler, parts)
    except Exception:
        import cloudpickle
        return _encode(cloudpickle.Pickler, parts)


def _encode(pickler_class, parts: list) -> tuple:
    buf = io.BytesIO()
    pickler = pickler_class(buf, protocol=5)
    sizes = {}
    for name, obj in parts:
        start = buf.tell()
        pickler.dump(obj)
        sizes[name] = buf.tell() - start
    return buf.getbuffer(), sizes  # a view, not a copy: stores can be big


def write_file(path: str, header: dict, payload: bytes) -> None:
    """Write a checkpoint atomically: ``PATH.new``, fsync, rename."""
    header = dict(header, format=FORMAT, length=len(payload),
                  sha256=hashlib.sha256(payload).hexdigest())
    tmp = path + '.new'
    try:
        with open(tmp, 'wb') as f:
            f.write(MAGIC)
            f.write(json.dumps(header, sort_keys=True).encode() + b'\n')
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as e:
        try:
            if os.path.isfile(tmp):
                os.unlink(tmp)
        except OSError:
            pass
        raise CheckpointError(
            f'Could not write checkpoint file: {path} ({e.strerror or e}). '
            f'The previous checkpoint, if any, is kept; free space or fix '
            f'the folder and re-run the same command to resume from it.') from e


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_header(path: str) -> tuple:
    """Read and check ``path``'s header; return ``(header, payload)``.

    Nothing is unpickled here: magic, format, length and checksum are
    checked on plain bytes.
    """
    what = f'The checkpoint file {path}'
    advice = ('Restore the right file, or delete it (and its .journal) to '
              'start the run over; it was left untouched.')
    try:
        with open(path, 'rb') as f:
            magic = f.read(len(MAGIC))
            if magic != MAGIC:
                raise CheckpointError(
                    f'{what} is not a job_stream checkpoint (it does not start '
                    f'with the job_stream checkpoint header). {advice}')
            line = f.readline(MAX_HEADER)
            payload = f.read()
    except OSError as e:
        raise CheckpointError(f'{what} cannot be read: {e.strerror or e}. '
                              f'{advice}') from e
    try:
        header = json.loads(line)
        length, digest = header['length'], header['sha256']
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f'{what} has a corrupted header. {advice}') from None
    if header.get('format') != FORMAT:
        raise CheckpointError(
            f'{what} has format {header.get("format")!r}; this job_stream '
            f'reads format {FORMAT}. {advice}')
    if len(payload) != length:
        raise CheckpointError(
            f'{what} is truncated: it holds {len(payload)} of {length} bytes '
            f'of state (was it copied while being written?). {advice}')
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f'{what} is corrupted: its checksum does not '
                              f'match its content. {advice}')
    return header, payload


def load(path: str, fingerprint: str) -> tuple:
    """Read a checkpoint for the pipeline with ``fingerprint``; return
    ``(header, parts dict)``."""
    from . import __version__
    header, payload = read_header(path)
    advice = ('Re-run with the script and job_stream version that wrote it, or '
              'delete it (and its .journal) to start over; it was left '
              'untouched.')
    if header.get('version') != __version__:
        raise CheckpointError(
            f'The checkpoint file {path} was written by job_stream '
            f'{header.get("version")}, this is {__version__}. {advice}')
    if header.get('fingerprint') != fingerprint:
        raise CheckpointError(
            f'The checkpoint file {path} was written by a different pipeline '
            f'(its stages, reducers or frames differ from this script\'s). '
            f'{advice}')
    unpickler = pickle.Unpickler(io.BytesIO(payload))
    try:
        parts = {name: unpickler.load() for name in PARTS}
    except Exception as e:
        raise CheckpointError(
            f'The checkpoint file {path} cannot be unpickled: {e!r} (a class '
            f'it stores may have been renamed or removed). {advice}') from e
    return header, parts


class CheckpointInfo(str):
    """What :func:`checkpointInfo` returns: a readable summary (it is a
    ``str``) with the details as attributes: ``taken`` (Unix time),
    ``queued`` (stage -> work count), ``reductions`` (stage -> open count),
    ``parts`` (part -> bytes), ``input_position``, ``delivered`` (results
    handed out), ``version``, ``fingerprint``.
    """


def checkpointInfo(path: str) -> CheckpointInfo:
    """Summarise the checkpoint file ``path`` without unpickling it.

        print(job_stream.checkpointInfo('job_stream.chkpt'))
    """
    header, payload = read_header(path)
    s = header.get('summary', {})
    taken = header.get('taken', 0)
    lines = [f'Checkpoint {path}: taken {time.ctime(taken)}, '
             f'job_stream {header.get("version")}, pipeline '
             f'{header.get("fingerprint")}, {len(payload)} bytes of state',
             f'  input read: {s.get("input_position", 0)} items; results '
             f'delivered: {s.get("delivered", 0)}']
    lines.append('  queued work per stage:' if s.get('queued')
                 else '  queued work: none')
    for stage, n in s.get('queued', {}).items():
        lines.append(f'    {stage}: {n}')
    reds = s.get('reductions', {})
    lines.append(f'  open reductions: {sum(reds.values())}')
    for stage, n in reds.items():
        lines.append(f'    {stage}: {n}')
    lines.append('  size per part (bytes): ' + ', '.join(
        f'{k} {v}' for k, v in s.get('parts', {}).items()))
    info = CheckpointInfo('\n'.join(lines))
    info.taken = taken
    info.queued = dict(s.get('queued', {}))
    info.reductions = dict(reds)
    info.parts = dict(s.get('parts', {}))
    info.input_position = s.get('input_position', 0)
    info.delivered = s.get('delivered', 0)
    info.version = header.get('version')
    info.fingerprint = header.get('fingerprint')
    return info


# -- input ------------------------------------------------------------------------
def _digest(items: Iterable) -> str:
    h = hashlib.sha256()
    for item in items:
        try:
            data = pickle.dumps(item, 5)
        except Exception:
            data = repr(item).encode('utf-8', 'replace')
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


class TrackedInput:
    """The run's input: the ``init`` outputs (``prefix``), then the user's
    work; remembers how far the user's work was read and its last items."""

    def __init__(self, prefix: list, work: Iterable, prefix_read: int = 0,
                 work_iter=None, work_read: int = 0, window=()):
        self.prefix = prefix
        self.prefix_read = prefix_read
        self.work_read = work_read
        self.window = collections.deque(window, maxlen=INPUT_WINDOW)
        self._work = work_iter if work_iter is not None else iter(work)

    def __iter__(self):
        return self

    def __next__(self):
        if self.prefix_read < len(self.prefix):
            self.prefix_read += 1
            return self.prefix[self.prefix_read - 1]
        item = next(self._work)
        self.work_read += 1
        self.window.append(item)
        return item

    def state(self) -> dict:
        return {'prefix': self.prefix[self.prefix_read:], 'work_read':
                self.work_read, 'window': _digest(self.window)}

    @classmethod
    def resume(cls, work: Iterable, state: dict, path: str) -> 'TrackedInput':
        """Skip the user's work already read; refuse an input that does not
        replay the same way."""
        n = state['work_read']
        if isinstance(work, (list, tuple, range)):
            window = work[max(0, n - INPUT_WINDOW):n]
            if len(window) < min(n, INPUT_WINDOW):
                window = None
            rest = iter(work[n:])
        else:
            it = iter(work)
            window = collections.deque(maxlen=INPUT_WINDOW)
            got = 0
            for item in itertools.islice(it, n):
                window.append(item)
                got += 1
            if got < n:
                window = None
            rest = it
        if window is None or _digest(window) != state['window']:
            raise CheckpointError(
                f'The input does not replay the same way as in the run that '
                f'wrote the checkpoint {path}: after skipping the {n} items '
                f'already read, the last ones differ (or the input is '
                f'shorter). A generator input is resumed by reading it again '
                f'up to its position, so it must yield the same items in the '
                f'same order (sort directory listings, seed random inputs). '
                f'The checkpoint was left untouched.')
        return cls(list(state['prefix']), None, 0, rest, n, window)


# -- the journal of delivered results ------------------------------------------------
def result_digest(result: Any) -> str:
    return _digest([result])[:32]


class Journal:
    """``PATH.journal``: one line ``SEQ DIGEST`` per result handed to the
    result handler, ``SEQ`` being the number of the last checkpoint taken
    before it.  Lines with ``SEQ`` >= a checkpoint's number were delivered
    after that checkpoint's state was captured."""

    def __init__(self, path: str):
        self.path = path
        self._fd: Optional[int] = None

    def read(self, since: int) -> collections.Counter:
        found: collections.Counter = collections.Counter()
        try:
            with open(self.path, 'r', errors='replace') as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) >= since:
                        found[parts[1]] += 1
        except FileNotFoundError:
            pass
        return found

    def append(self, seq: int, digest: str) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, f'{seq} {digest}\n'.encode())

    def compact(self, since: int) -> None:
        """Keep only the lines of results delivered after checkpoint ``since``."""
        self.close()
        try:
            with open(self.path) as f:
                keep = [l for l in f if l.split()[:1] and l.split()[0].isdigit()
                        and int(l.split()[0]) >= since]
        except FileNotFoundError:
            return
        tmp = self.path + '.new'
        with open(tmp, 'w') as f:
            f.writelines(keep)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- the Processor's state ---------------------------------------------------------
def capture(proc, results: Optional[list], tracked: TrackedInput,
            skip: collections.Counter, seq: int) -> tuple:
    """Pickle ``proc``'s state; return ``(payload, summary)``.

    Raises :class:`CheckpointError` naming the stage whose work or store
    cannot be pickled.
    """
    if proc.closing or proc.closes_out:
        raise JobStreamError('internal error: a checkpoint was taken while '
                             'reducer calls were waiting; please report this')
    queue = {cid: [list(chunk) for chunk in q] for cid, q in proc.pending.items()}
    for bid in sorted(proc.inflight, reverse=True):  # in flight: queued first
        batch = proc.inflight[bid]
        chunks, index = [], 0
        for red, count, producer in batch.segments:
            position = (batch.position + index
                        if batch.position is not None else None)
            chunks.append([red, batch.works[index:index + count], producer,
                           batch.attempts, position])
            index += count
        queue[batch.chain][0:0] = chunks
    misc = {'input_node': proc._input_node, 'input_reduction': proc._input_reduction,
            'input_position': proc.input_position, 'input_done': proc.input_done,
            'next_id': max(proc.reductions, default=-1) + 1,
            'delivered': proc.delivered, 'seq': seq}
    parts = [('stores', proc.reductions), ('queue', queue),
             ('input', dict(tracked.state(), **misc)),
             ('results', {'results': results, 'skip': dict(skip)}),
             ('stats', (proc.stats, proc.sizers))]
    try:
        payload, sizes = encode(parts)
    except Exception as e:
        raise _unpicklable(proc, queue, e) from e
    nodes = proc.pipeline.nodes
    queued = {}
    for cid, chunks in queue.items():
        n = sum(len(c[1]) for c in chunks)
        if n:
            queued[nodes[cid].name] = n
    reds: dict = {}
    for red in proc.reductions.values():
        name = nodes[red.close].closer.name if red.close is not None else '(all work)'
        reds[name] = reds.get(name, 0) + 1
    summary = {'queued': queued, 'reductions': reds, 'parts': sizes,
               'input_position': proc.input_position,
               'delivered': proc.delivered}
    return payload, summary


def _unpicklable(proc, queue: dict, error: Exception) -> CheckpointError:
    import cloudpickle
    nodes = proc.pipeline.nodes
    for red in proc.reductions.values():
        try:
            cloudpickle.dumps(red.store)
        except Exception as e:
            name = nodes[red.close].closer.name if red.close is not None else '?'
            return CheckpointError(
                f'Cannot checkpoint: the store of stage {name!r} cannot be '
                f'pickled: {e!r}. Keep only picklable data in stores (no open '
                f'files, locks or generators).')
    for cid, chunks in queue.items():
        for chunk in chunks:
            for work in chunk[1]:
                try:
                    cloudpickle.dumps(work)
                except Exception as e:
                    return CheckpointError(
                        f'Cannot checkpoint: work queued for stage '
                        f'{nodes[cid].name!r} cannot be pickled: {e!r} (work: '
                        f'{short_repr(work)}).')
    return CheckpointError(f'Cannot checkpoint: the run\'s state cannot be '
                           f'pickled: {error!r}.')


def restore(proc, parts: dict) -> None:
    """Set a new Processor's state from a checkpoint (instead of starting)."""
    from collections import deque
    proc.reductions = parts['stores']
    proc.pending = {cid: deque(chunks) for cid, chunks in parts['queue'].items()}
    proc.pending_items = sum(len(c[1]) for q in proc.pending.values() for c in q)
    misc = parts['input']
    proc._input_node = misc['input_node']
    proc._input_reduction = misc['input_reduction']
    proc.input_position = misc['input_position']
    proc.input_done = misc['input_done']
    proc.delivered = misc['delivered']
    proc._ids = itertools.count(misc['next_id'])
    proc.stats, proc.sizers = parts['stats']


# -- the runner's hook ---------------------------------------------------------------
class Checkpointer:
    """Everything the runner does for checkpoints, behind a few calls.

    Created at the start of a run: checks the folder and ``PATH.done``,
    loads ``PATH`` if it exists (refusing a bad one before any work).
    """

    def __init__(self, path: str, compiled, interval: float = 600.0,
                 sync_interval: float = 0.0):
        path = os.fspath(path)
        if not isinstance(interval, (int, float)) or interval < 0:
            raise ValueError(f'checkpointInterval must be a number of seconds '
                             f'>= 0, not {interval!r}')
        self.path = path
        self.interval = float(interval)
        self.sync_interval = sync_interval  # accepted for compatibility
        self.compiled = compiled
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CheckpointError(
                f'Cannot use checkpoints: the folder containing the requested '
                f'checkpoint file does not exist: {path}')
        if os.path.exists(path + '.done'):
            raise CheckpointError(
                f'This run already finished: {path}.done exists, written when '
                f'the run that used the checkpoint file {path} completed. '
                f'Nothing was run or overwritten. Delete {path}.done to start '
                f'a new run.')
        if os.path.isdir(path):
            raise CheckpointError(f'The checkpoint file {path} is a folder; '
                                  f'give the path of a file.')
        print(f'Using {path} as checkpoint file', file=sys.stderr, flush=True)
        self.header, self.parts = (load(path, compiled.fingerprint)
                                   if os.path.exists(path) else (None, None))
        self.journal = Journal(path + '.journal')
        self.seq = 0
        self.skip: collections.Counter = collections.Counter()
        if self.parts is not None:
            print(f'Resuming from the checkpoint taken '
                  f'{time.ctime(self.header.get("taken", 0))}', file=sys.stderr,
                  flush=True)
            self.seq = self.parts['input']['seq']
            self.skip = collections.Counter(self.parts['results']['skip'])
            self.skip.update(self.journal.read(self.seq))
        elif os.path.exists(self.journal.path):
            # Left by a run that died before its first checkpoint: it starts
            # over, so what it delivered will be delivered again.
            os.unlink(self.journal.path)
        self.tracked: Optional[TrackedInput] = None
        self._forced: Optional[bool] = None
        self._stop: Optional[int] = None
        # A fresh run takes its first checkpoint at once: init has run and
        # must not run again, whenever the process dies.
        self._last = time.monotonic() if self.resuming else float('-inf')
        self._writer: Optional[threading.Thread] = None
        self._write_error: Optional[BaseException] = None
        self._write_started = 0.0
        self._write_seq = 0
        self._old_handlers: dict = {}

    @property
    def resuming(self) -> bool:
        return self.parts is not None

    # -- set-up -----------------------------------------------------------------
    def input(self, work: Iterable, init: Optional[Callable[[], list]]):
        """The iterator the Processor reads: resumed, or fresh with ``init``."""
        if self.resuming:
            self.tracked = TrackedInput.resume(work, self.parts['input'], self.path)
        else:
            self.tracked = TrackedInput(init() if init else [], work)
        return self.tracked

    def state(self) -> Optional[dict]:
        return self.parts

    def results(self) -> Optional[list]:
        return self.parts['results']['results'] if self.resuming else []

    def wrap_handler(self, handler: Optional[Callable]) -> Optional[Callable]:
        """The result handler, skipping results already delivered after the
        checkpoint (from the journal) and journaling each one it delivers."""
        if handler is None:
            return None

        def deliver(result):
            digest = result_digest(result)
            if self.skip.get(digest):
                self.skip[digest] -= 1
                if not self.skip[digest]:
                    del self.skip[digest]
                return
            handler(result)
            self.journal.append(self.seq, digest)
        return deliver

    def install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _STOP_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._stop is not None and signum == signal.SIGINT:
            os.write(2, (f'\nSecond interrupt: exiting without waiting; the last '
                         f'complete checkpoint {self.path} is kept.\n').encode())
            os._exit(130)
        first, self._stop = self._stop is None, signum  # set before any
        if first:                                          # call: no reentry
            extra = (' (press Ctrl-C again to exit at once)'
                     if signum == signal.SIGINT else '')
            os.write(2, (f'\njob_stream: {signal.Signals(signum).name} received: '
                         f'writing a checkpoint, then exiting{extra}.\n').encode())

    # -- during the run ------------------------------------------------------------
    def force(self, crash: bool) -> None:
        """A job asked for a checkpoint after its work (``crash``: then exit)."""
        self._forced = bool(crash) or bool(self._forced)

    def tick(self, proc, results: Optional[list],
             settle: Optional[Callable[[], None]] = None) -> None:
        """Called between two applies: finish a background write, take a
        checkpoint if one is due, stop if asked to.

        ``settle()`` runs first when a checkpoint is to be taken: it brings
        the Processor to a state without work half-way through a reducer
        (and may finish the run, in which case no checkpoint is taken).
        """
        self._reap(block=False)
        stopping = self._stop is not None or bool(self._forced)
        if not stopping and not (
                self._writer is None
                and (self._forced is not None
                     or time.monotonic() - self._last >= self.interval)):
            return
        if settle is not None:
            settle()
            if proc.finished:
                return
        if stopping:
            self._reap(block=True)
            self.take(proc, results, background=False)
            if self._stop is not None:
                name = signal.Signals(self._stop).name
                raise CheckpointExit(
                    f'job_stream: stopped by {name} after writing the checkpoint '
                    f'{self.path}; re-running the same command resumes the run.')
            raise CheckpointExit(
                f'job_stream: the checkpoint {self.path} was forced by a job and '
                f'the run exits as asked (a test of crash recovery); re-running '
                f'the same command resumes the run.')
        self._forced = None
        # The first one is written before going on: until it exists, a
        # crash means starting over (init again, results again).
        self.take(proc, results, background=self._last != float('-inf'))

    def take(self, proc, results: Optional[list], background: bool) -> None:
        from . import __version__
        started = time.perf_counter()
        self.seq += 1
        payload, summary = capture(proc, results, self.tracked, self.skip, self.seq)
        header = {'fingerprint': self.compiled.fingerprint,
                  'version': __version__, 'taken': time.time(),
                  'summary': summary}
        self._write_started, self._write_seq = started, self.seq
        if not background:
            write_file(self.path, header, payload)
            self._written()
            return

        def write():
            try:
                write_file(self.path, header, payload)
            except BaseException as e:
                self._write_error = e
        self._writer = threading.Thread(target=write, name='job_stream checkpoint',
                                        daemon=True)
        self._writer.start()

    def _reap(self, block: bool) -> None:
        writer = self._writer
        if writer is None or (not block and writer.is_alive()):
            return
        writer.join()
        self._writer = None
        if self._write_error is not None:
            error, self._write_error = self._write_error, None
            raise error
        self._written()

    def _written(self) -> None:
        self.journal.compact(self._write_seq)
        ms = (time.perf_counter() - self._write_started) * 1000
        print(f'Checkpoint took {ms:.0f} ms, resuming computation',
              file=sys.stderr, flush=True)
        self._last = time.monotonic()

    # -- the end ---------------------------------------------------------------------
    def succeeded(self) -> None:
        """The run finished: write ``PATH.done``, remove ``PATH``."""
        if self._writer is not None:
            # A checkpoint still being written is moot now (and if it failed,
            # the run finished anyway): wait for it, ignore its outcome.
            self._writer.join()
            self._writer, self._write_error = None, None
        self.journal.close()
        try:
            with open(self.path + '.done', 'w') as f:
                f.write(f'job_stream: the run that used the checkpoint file '
                        f'{self.path} finished on {time.ctime()}.\nThis marker '
                        f'stops the same command from running again by '
                        f'mistake; delete it to start a new run.\n')
        except OSError as e:
            raise CheckpointError(
                f'The run finished, but {self.path}.done could not be written '
                f'({e.strerror or e}); the checkpoint {self.path} is kept, so '
                f'running the same command again would resume and finish '
                f'the run again from that checkpoint.') from e
        for p in (self.path, self.path + '.journal'):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Always called at the end: finish a write in progress (so ``PATH``
        is a complete checkpoint), restore the signal handlers."""
        try:
            if self._writer is not None:
                self._writer.join()
                self._writer = None
        finally:
            self.journal.close()
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old)
            self._old_handlers = {}
