"""Entry point of a worker process: ``python -m job_stream._worker FD``.

Workers start from here, never from the user's script, so a script without
an ``if __name__ == '__main__':`` guard is not re-run, whatever the platform.
The user's code arrives by value (cloudpickle) in a ``run`` message.

FD is one end of a socket pair to the primary.  A reader thread drains it
into an :class:`Inbox`, so the primary can always send (no deadlock when both
sides send large messages), and leaves the process at once when it closes,
which happens when the primary exits or is killed: workers never outlive it.
The reader also answers ``revoke``: a batch still waiting in the inbox is
taken out and handed back (``revoked``), so the primary can give it to an
idle worker instead.
"""
from __future__ import annotations

import os
import random
import signal
import struct
import sys
import threading
from collections import deque
from multiprocessing.connection import Connection

from .batch import Failed
from .errors import short_repr
from .executors.base import whole_lines
from .executors.chain import ChainRunner, failure
from .serialization import dumps, find_unpicklable, loads


# A batch message is BATCH + its (run id, batch id) + the pickled batch, so
# the reader thread can find it without unpickling it (unpickling work may
# need the sys.path that the preceding ``run`` message sets, on the main
# thread); REVOKE + the same ids asks for a batch back.  Other messages are
# plain pickles (which start with b'\x80').
BATCH, REVOKE = b'B', b'R'
IDS = struct.Struct('<qq')


class Inbox:
    """Messages from the primary, in order; a batch not yet started can be
    taken out again (:meth:`revoke`)."""

    def __init__(self):
        self._messages: deque = deque()  # (ids or None, message bytes)
        self._ready = threading.Condition()

    def put(self, ids, data: bytes) -> None:
        with self._ready:
            self._messages.append((ids, data))
            self._ready.notify()

    def get(self) -> tuple:
        """The next message, unpickled."""
        with self._ready:
            while not self._messages:
                self._ready.wait()
            ids, data = self._messages.popleft()
        return loads(memoryview(data)[1 + IDS.size:] if ids else data)

    def revoke(self, ids: tuple) -> bool:
        """Remove that batch if it is still waiting; True if it was."""
        with self._ready:
            for entry in self._messages:
                if entry[0] == ids:
                    self._messages.remove(entry)
                    return True
        return False


def _read_forever(conn: Connection, inbox: Inbox, send) -> None:
    try:
        while True:
            data = conn.recv_bytes()
            tag = data[:1]
            if tag == REVOKE:
                ids = IDS.unpack_from(data, 1)
                if inbox.revoke(ids):
                    send(dumps(('revoked',) + ids))
            else:
                inbox.put(IDS.unpack_from(data, 1) if tag == BATCH else None,
                          data)
    except (EOFError, OSError):
        os._exit(0)  # the primary is gone: leave now, whatever is running


def _send_outcome(send, run_id: int, outcome, last_stage: str) -> None:
    try:
        data = dumps(('out', run_id, outcome))
    except Exception:
        outputs = [w for segment in outcome.outputs for w in segment]
        index, error = find_unpicklable(outputs)
        data = dumps(('out', run_id, Failed(
            outcome.batch, last_stage, short_repr(outputs[index]),
            f'Work emitted by stage {last_stage!r} cannot be pickled to send '
            f'it to the primary process: {error!r}. Emit plain data (numbers, '
            f'strings, lists, dicts, numpy arrays, picklable objects).\n')))
    send(data)


def _stop_signal(signum, frame) -> None:
    """Ctrl-C and SIGUSR1 reach workers too (a terminal, and ``mpiexec``,
    signal the whole process group), but they ask the primary to checkpoint
    and stop: it decides, and ends or kills the workers.  A handler, not
    SIG_IGN, so programs the jobs start still get the default action."""


def main() -> None:
    for sig in (signal.SIGINT, getattr(signal, 'SIGUSR1', None)):
        if sig is not None:
            signal.signal(sig, _stop_signal)
    conn = Connection(int(sys.argv[1]))
    whole_lines()  # the primary's forwarding threads merge the workers' streams
    random.seed()  # fresh interpreters already differ; be explicit anyway
    inbox = Inbox()
    sending = threading.Lock()  # outcomes (here) and revoked (the reader)

    def send(data: bytes) -> None:
        with sending:
            conn.send_bytes(data)
    threading.Thread(target=_read_forever, args=(conn, inbox, send),
                     daemon=True).start()
    run_id, runner, setup_error, chains = None, None, None, {}
    while True:
        msg = inbox.get()
        kind = msg[0]
        if kind == 'batch':
            _, rid, batch_id, chain_id, works, cuts, position = msg
            if rid != run_id:
                continue  # left over from an aborted run
            if setup_error is not None:
                outcome = setup_error._replace_batch(batch_id)
            else:
                outcome = runner.run(batch_id, chain_id, works, cuts, position)
            _send_outcome(send, run_id, outcome,
                          chains[chain_id][-1].name if chains else '?')
            sys.stdout.flush()
            sys.stderr.flush()
        elif kind == 'run':
            _, run_id, blob, path, cwd = msg
            sys.path[:] = path
            try:
                os.chdir(cwd)
            except OSError:
                pass
            try:
                chains = loads(blob)
                runner, setup_error = ChainRunner(chains), None
            except Exception as e:
                setup_error = _SetupError(e)
        elif kind == 'quit':
            return


class _SetupError:
    """Loading the pipeline's code failed in this worker (e.g. an import)."""

    def __init__(self, error: BaseException):
        self.failed = failure(-1, '(loading the pipeline in a worker process)',
                              None, error)

    def _replace_batch(self, batch_id: int) -> Failed:
        f = self.failed
        return Failed(batch_id, f.stage, f.work, f.traceback, f.error)


if __name__ == '__main__':
    main()
