"""The MPI executor: one run across many ranks (hosts).

Rank 0 holds the Processor; every rank, rank 0 included, runs a local
worker pool (:class:`~job_stream.executors.processes.ProcessExecutor`) sized
to its host's cores.  Rank 0 keeps each rank at most two batches per worker
slot ahead, so a rank receives a new batch only when it has answered an old
one: a slow or overloaded host pulls less work (the original's work
stealing, without its token ring).

    rank 0: runner -> MPIExecutor --(run, shared, batch, end)--> rank r
                                  <--(ready, out)-------------- rank r: serve()

Every rank executes the user's script (SPMD).  On ranks > 0, ``run()`` calls
:func:`serve`, which answers rank 0 until the run ends and returns None.  The
pipeline's code travels by value from rank 0 (as to local workers); each
rank compares its own pipeline's fingerprint with rank 0's and the run is
refused when they differ.

MPI does not notice a cut network link, and MPI calls can hang after one,
so liveness is ours: a heartbeat thread on every rank beats every
:data:`BEAT_SECONDS` towards rank 0 (rank 0 towards every rank) on a
separate communicator, and a watchdog thread that never calls MPI declares
a peer lost after ``JOB_STREAM_HEARTBEAT_TIMEOUT`` seconds of silence.  A
rank > 0 that loses rank 0 leaves at once with ``os._exit``; rank 0 raises
:class:`~job_stream.errors.RankLostError` from the run and leaves with
``os._exit`` if that does not end the process in :data:`GRACE_SECONDS`.
See DESIGN.md (failure table).

mpi4py is imported only when a launcher's variables say this process is one
of several ranks (:func:`launcher_size`).
"""
from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from typing import Optional

from ..batch import Batch, Done
from ..errors import ConfigurationError, JobStreamError, RankLostError
from ..serialization import dumps, dumps_code, loads
from .. import shared
from ..stats import HostInfo
from .base import Executor, whole_lines
from .processes import local_cpu_count, shared_pool

# Seconds between heartbeats, both ways.
BEAT_SECONDS = 0.5
# Seconds between reads of the peers' beats.
RECEIVE_SECONDS = 0.1
# Seconds of silence after which a peer is lost (env overrides).  4 s keeps
# "a lost rank ends every rank within 10 s": rank 0 notices within 4.5 s,
# the others stop hearing rank 0 within 4.5 s of its exit.
DEFAULT_HEARTBEAT_TIMEOUT = 4.0
# Seconds rank 0's main thread gets to leave after a loss before os._exit.
GRACE_SECONDS = 2.0
# Exit status of a process that leaves because a peer was lost.
EXIT_LOST = 75
# Polling backoff of idle loops (MPICH's blocking calls spin a core, so
# nothing here blocks in MPI): from MIN to MAX seconds, doubling.
MIN_POLL = 0.0005
MAX_POLL = 0.005

TAG_DOWN, TAG_UP, TAG_BEAT = 1, 2, 3

_SIZE_VARS = ('PMI_SIZE', 'OMPI_COMM_WORLD_SIZE', 'PMIX_SIZE', 'MPI_LOCALNRANKS',
              'SLURM_NTASKS')
_RANK_VARS = ('PMI_RANK', 'OMPI_COMM_WORLD_RANK', 'PMIX_RANK')


def launcher_size() -> int:
    """Number of ranks an MPI launcher started, from its environment (1 if
    this process was not started by one); imports nothing."""
    if not any(v in os.environ for v in _RANK_VARS):
        return 1
    for name in _SIZE_VARS[:3]:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 2  # a rank variable without a size: ask MPI


_WORLD = None
_WORLD_CHECKED = False
# Set by a rank for its worker processes, which have no MPI of their own.
RANK_VARIABLE = 'JOB_STREAM_RANK'


def world() -> Optional['World']:
    """The MPI world when running on several ranks, else None (no MPI import)."""
    global _WORLD, _WORLD_CHECKED
    if not _WORLD_CHECKED:
        _WORLD_CHECKED = True
        if launcher_size() > 1:
            # This rank's worker processes (no MPI of their own) inherit
            # it; the launcher's variable says it before MPI starts.
            launched = next((os.environ[v] for v in _RANK_VARS
                             if os.environ.get(v, '').isdigit()), None)
            if launched is not None:
                os.environ[RANK_VARIABLE] = launched
            # Every rank will run a pool of this size (unless run() is given
            # processes=): start its workers while MPI starts.
            shared_pool(host_cpu_count()).spawn()
            w = World()
            if w.size > 1:
                _WORLD = w
                if os.environ.get(RANK_VARIABLE) != str(w.rank):
                    # known too late for the workers already started:
                    # replace them, so that they inherit it
                    os.environ[RANK_VARIABLE] = str(w.rank)
                    shared_pool(host_cpu_count()).shutdown()
                    shared_pool(host_cpu_count()).spawn()
                whole_lines()  # the launcher merges the ranks' streams
    return _WORLD


def rank() -> int:
    """This rank, also inside its worker processes; 0 without MPI."""
    w = world()
    if w is not None:
        return w.rank
    return int(os.environ.get(RANK_VARIABLE, 0))


def cpu_count(processes: Optional[int] = None) -> Optional[int]:
    """Worker slots of all ranks, or None when not under MPI."""
    w = world()
    if w is None:
        return None
    return sum(processes or cpus for _, cpus in w.hosts)


def host_cpu_count() -> int:
    """Cores of this rank's host: its ``cpus=`` from the job_stream command,
    else its usable cores (:func:`job_stream.hosts.usable_cpus`)."""
    from ..hosts import cpus_here
    return cpus_here() or local_cpu_count()


class World:
    """This process's place among the ranks, and the heartbeats."""

    def __init__(self):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.beats = MPI.COMM_WORLD.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        from .. import __version__
        me = (socket.gethostname().split('.')[0], host_cpu_count(),
              __version__, '.'.join(map(str, sys.version_info[:3])))
        everyone = self.comm.allgather(me)
        self.hosts = [(name, cpus) for name, cpus, _, _ in everyone]
        for r, other in enumerate(everyone):
            if other[2:] != everyone[0][2:]:
                raise ConfigurationError(
                    f'Rank {r} (host {other[0]}) runs job_stream {other[2]} on '
                    f'Python {other[3]} but rank 0 (host {everyone[0][0]}) '
                    f'runs job_stream {everyone[0][2]} on Python '
                    f'{everyone[0][3]}; install the same versions on every '
                    f'host.')
        self.runs = 0
        self.ended = 0   # the last run rank 0 told the other ranks had ended
        self.shared_sent: dict = {r: set() for r in range(self.size)}
        self.early_ready: dict = {}
        self.timeout = float(os.environ.get('JOB_STREAM_HEARTBEAT_TIMEOUT',
                                            DEFAULT_HEARTBEAT_TIMEOUT))
        self.peers = list(range(1, self.size)) if self.rank == 0 else [0]
        now = time.monotonic()
        self.last_seen = {p: now for p in self.peers}
        self.gone: set = set()       # peers that said goodbye
        self.lost: Optional[tuple] = None  # (rank, seconds of silence)
        self._stop = threading.Event()
        self._monitor = _connect_monitor(self.rank, me[0])
        self._beat_thread = threading.Thread(target=self._beat, daemon=True,
                                             name='job_stream-heartbeat')
        self._beat_thread.start()
        threading.Thread(target=self._watch, daemon=True,
                         name='job_stream-watchdog').start()
        atexit.register(self.close)

    def host(self, r: int) -> str:
        return self.hosts[r][0]

    # -- heartbeats -----------------------------------------------------------
    def _beat(self) -> None:
        """Beat every BEAT_SECONDS; read the peers' beats every RECEIVE_SECONDS.

        Leaving is a handshake so that no beat is left unreceived at
        MPI_Finalize: the leaving rank sends "bye" and reads until every
        live peer answered "ack" (or said bye itself); a peer that got "bye"
        answers "ack" and never sends to it again.
        """
        MPI = self.MPI
        beat, bye, ack = bytearray(b'h'), bytearray(b'b'), bytearray(b'a')
        status = MPI.Status()
        pending: list = []
        next_beat = 0.0
        waiting: Optional[set] = None  # peers whose ack we wait for
        leave_by = 0.0
        while True:
            now = time.monotonic()
            if waiting is None and self._stop.is_set():
                waiting = {p for p in self.peers if p not in self.gone}
                for p in waiting:
                    pending.append(self.beats.Isend([bye, MPI.BYTE], p, TAG_BEAT))
                leave_by = now + 2.0
            if waiting is None and now >= next_beat:
                next_beat = now + BEAT_SECONDS
                for p in self.peers:
                    if p not in self.gone:
                        pending.append(self.beats.Isend([beat, MPI.BYTE], p,
                                                        TAG_BEAT))
                if self._monitor is not None and self.rank == 0:
                    self._tell_monitor(b'.')
            while self.beats.Iprobe(MPI.ANY_SOURCE, TAG_BEAT, status):
                src = status.Get_source()
                buf = bytearray(1)
                self.beats.Recv([buf, MPI.BYTE], src, TAG_BEAT)
                self.last_seen[src] = time.monotonic()
                if buf == bye:
                    if waiting is None:
                        pending.append(self.beats.Isend([ack, MPI.BYTE], src,
                                                        TAG_BEAT))
                    self.gone.add(src)
                    if waiting is not None:
                        waiting.discard(src)
                elif buf == ack and waiting is not None:
                    waiting.discard(src)
            pending = [r for r in pending if not r.Test()]
            if waiting is not None and ((not waiting and not pending)
                                        or now > leave_by):
                return
            self._stop.wait(RECEIVE_SECONDS) if waiting is None else time.sleep(0.005)

    def _watch(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            now = time.monotonic()
            for p in self.peers:
                silent = now - self.last_seen[p]
                if p not in self.gone and silent > self.timeout:
                    self._peer_lost(p, silent)
                    return

    def _peer_lost(self, peer: int, silent: float) -> None:
        message = (f'job_stream: rank {self.rank} (host {self.host(self.rank)}) '
                   f'lost rank {peer} (host {self.host(peer)}): no heartbeat '
                   f'for {silent:.1f} s.')
        if self.rank != 0:
            _say(message + ' Leaving.')
            os._exit(EXIT_LOST)
        self.lost = (peer, silent)
        self._tell_monitor(b'L' + message.encode() + b'\n')
        time.sleep(GRACE_SECONDS)
        _say(message + ' Leaving.')
        os._exit(EXIT_LOST)

    def _tell_monitor(self, data: bytes) -> None:
        try:
            self._monitor.send(data)
        except (OSError, AttributeError):
            self._monitor = None

    def check(self) -> None:
        """Raise RankLostError if a peer was lost (rank 0's main thread)."""
        if self.lost is not None:
            peer, silent = self.lost
            raise RankLostError(
                f'Lost rank {peer} (host {self.host(peer)}): no heartbeat for '
                f'{silent:.1f} s (its process died, or the host or its network '
                f'is down). The run stops; re-run it with a checkpoint '
                f'(job_stream -c FILE) to resume from the last one.')

    def close(self) -> None:
        """Say goodbye to the peers (at interpreter exit)."""
        if not self._stop.is_set():
            self._stop.set()
            self._beat_thread.join(timeout=3.0)
            if self._monitor is not None:
                self._monitor.setblocking(True)
                self._tell_monitor(b'D')

    # -- messages -------------------------------------------------------------
    def next_run(self) -> int:
        self.runs += 1
        return self.runs


def _say(message: str) -> None:
    try:
        sys.stderr.write(message + '\n')
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _connect_monitor(rank: int, host: str):
    """Connect to the job_stream command (see cli.py) and say who we are.

    Rank 0 then beats on it; every rank says ``D`` when it leaves in order,
    so a connection closing without it names a rank killed or lost with its
    host.  Without a command (plain mpiexec), None."""
    address = os.environ.get('JOB_STREAM_MONITOR')
    if not address:
        return None
    rest, _, token = address.rpartition(':')
    where, _, port = rest.rpartition(':')
    try:
        s = socket.create_connection((where, int(port)),
                                     timeout=5 if rank == 0 else 1)
        s.sendall(f'H{token} {rank} {host}\n'.encode())
        s.setblocking(False)
        return s
    except (OSError, ValueError):
        return None


class _Link:
    """Sends and receives of one communicator, with byte counts per rank."""

    def __init__(self, w: World):
        self.w = w
        self.MPI = w.MPI
        self.status = w.MPI.Status()
        self.pending: list = []      # (request, buffer)
        self.sent_bytes: dict = {}
        self.received_bytes: dict = {}
        self.messages: dict = {}
        self.seconds: dict = {}

    def send(self, dest: int, tag: int, data: bytes) -> None:
        t0 = time.perf_counter()
        buf = bytearray(data)
        self.pending.append((self.w.comm.Isend([buf, self.MPI.BYTE], dest, tag),
                             buf))
        self.sent_bytes[dest] = self.sent_bytes.get(dest, 0) + len(buf)
        self.messages[dest] = self.messages.get(dest, 0) + 1
        self.seconds[dest] = self.seconds.get(dest, 0.0) + time.perf_counter() - t0
        self.pump()

    def pump(self) -> None:
        self.pending = [(r, b) for r, b in self.pending if not r.Test()]

    def flush(self, deadline: float) -> None:
        """Complete pending sends, until ``deadline`` (monotonic) at most."""
        while self.pending and time.monotonic() < deadline:
            self.pump()
            if self.pending:
                time.sleep(MIN_POLL)

    def receive(self, source: int, tag: int):
        """One message if any is waiting: (source, object), else None."""
        if not self.w.comm.Iprobe(source, tag, self.status):
            return None
        t0 = time.perf_counter()
        src = self.status.Get_source()
        buf = bytearray(self.status.Get_count(self.MPI.BYTE))
        self.w.comm.Recv([buf, self.MPI.BYTE], src, tag)
        self.received_bytes[src] = self.received_bytes.get(src, 0) + len(buf)
        self.messages[src] = self.messages.get(src, 0) + 1
        msg = loads(buf)
        self.seconds[src] = self.seconds.get(src, 0.0) + time.perf_counter() - t0
        return src, msg


# Totals of the last runs on rank 0, for tests and benchmarks.
WIRE = {'bytes_sent': 0, 'bytes_received': 0, 'shared_bytes': 0,
        'shared_sends': 0, 'runs': 0}


def wire_stats() -> dict:
    """Bytes rank 0 exchanged with other ranks in this process (cumulative):
    ``bytes_sent``, ``bytes_received``, ``shared_bytes`` and ``shared_sends``
    (content of :class:`~job_stream.shared.Shared` values)."""
    return dict(WIRE)


class _Rank:
    """What rank 0 knows of another rank during a run."""

    def __init__(self, r: int, name: str, slots: int):
        self.r, self.name, self.slots = r, name, slots
        self.ready = False
        self.inflight: dict = {}
        self.work_messages = 0


class MPIExecutor(Executor):
    """Rank 0's executor: its local pool plus every other rank's pool."""

    def __init__(self, w: World, processes: Optional[int], fingerprint: str):
        self.w = w
        self.local = shared_pool(processes or w.hosts[0][1])
        self.fingerprint = fingerprint
        self.link = _Link(w)
        self.ranks = [_Rank(r, w.host(r), processes or w.hosts[r][1])
                      for r in range(1, w.size)]
        self.slots = self.local.slots + sum(r.slots for r in self.ranks)
        self.run_id = 0
        # what each rank already holds, and ready messages of a later run,
        # kept by the world across runs
        self.shared_sent = w.shared_sent
        self._early = w.early_ready
        self._ended = False

    # the report's numbers of rank 0 itself (the runner reads them)
    @property
    def messages(self) -> int:
        return self.local.messages

    @property
    def work_messages(self) -> int:
        return self.local.work_messages

    @property
    def comm_seconds(self) -> float:
        return self.local.comm_seconds

    def start(self, chains: dict) -> None:
        self.run_id = self.w.next_run()
        WIRE['runs'] += 1
        self.local.start(chains)
        try:
            with shared.tracking() as keys:
                blob = dumps_code(chains)
        except Exception as e:
            raise ConfigurationError(
                f'The pipeline\'s jobs cannot be sent to other ranks: {e!r}. '
                f'Make what the job functions use picklable.') from e
        for rk in self.ranks:
            self._send_shared(rk, keys)
            self._send(rk, ('run', self.run_id, blob))
            early = self._early.pop(rk.r, None)
            if early is not None:
                self._on_message(rk.r, early, [])

    def _send(self, rk: _Rank, msg, data: Optional[bytes] = None) -> None:
        data = dumps(msg) if data is None else data
        self.link.send(rk.r, TAG_DOWN, data)
        WIRE['bytes_sent'] += len(data)

    def _send_shared(self, rk: _Rank, keys: set) -> None:
        for key in sorted(keys - self.shared_sent[rk.r]):
            blob = shared.get_blob(key)
            self._send(rk, ('shared', key, blob))
            self.shared_sent[rk.r].add(key)
            WIRE['shared_bytes'] += len(blob)
            WIRE['shared_sends'] += 1

    # -- the executor contract ----------------------------------------------
    def room(self, ahead: bool) -> bool:
        if self.local.room(ahead):
            return True
        # Another rank always gets one batch per slot queued ahead, whatever
        # the item length, so the network round trip never leaves it idle.
        return any(rk.ready and len(rk.inflight) < 2 * rk.slots
                   for rk in self.ranks)

    def in_flight(self) -> int:
        return self.local.in_flight() + sum(len(rk.inflight) for rk in self.ranks)

    def reclaim(self) -> None:
        # Only from rank 0's own workers: another rank's batches are in its
        # own pool's hands (DESIGN.md: work stealing between hosts is
        # by pulling, two batches per slot ahead).
        self.local.reclaim()

    def submit(self, batch: Batch) -> None:
        best, best_load = None, self.local.in_flight() / self.local.slots
        if not self.local.room(True):
            best_load = float('inf')
        for rk in self.ranks:
            if rk.ready and len(rk.inflight) < 2 * rk.slots:
                load = len(rk.inflight) / rk.slots
                if load < best_load:
                    best, best_load = rk, load
        if best is None:
            self.local.submit(batch)
            return
        try:
            with shared.tracking() as keys:
                data = dumps(('batch', self.run_id, batch.id, batch.chain,
                              batch.works, batch.cuts, batch.position))
        except Exception:
            self.local.submit(batch)  # it reports the unpicklable work
            return
        self._send_shared(best, keys)
        best.inflight[batch.id] = batch
        best.work_messages += 1
        self._send(best, None, data)

    def wait(self, timeout: Optional[float]) -> list:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = MIN_POLL
        while True:
            self.w.check()
            self.link.pump()
            out: list = []
            while True:
                got = self.link.receive(self.MPI_ANY, TAG_UP)
                if got is None:
                    break
                self._on_message(got[0], got[1], out)
            left = None if deadline is None else deadline - time.monotonic()
            step = delay if left is None else max(0.0, min(delay, left))
            if self.local.in_flight():
                out += self.local.wait(0 if out else step)
            elif not out and step > 0:
                time.sleep(step)
            if out or (left is not None and left <= 0):
                return out
            self._check_ranks()
            delay = min(2 * delay, MAX_POLL)

    @property
    def MPI_ANY(self) -> int:
        return self.w.MPI.ANY_SOURCE

    def _on_message(self, src: int, msg, out: list) -> None:
        rk = self.ranks[src - 1]
        kind = msg[0]
        if kind == 'ready':
            _, run_id, fingerprint, slots = msg
            if run_id > self.run_id:
                self._early[src] = msg
                return
            if run_id != self.run_id:
                return
            if fingerprint != self.fingerprint:
                raise ConfigurationError(
                    f'Rank {src} (host {rk.name}) built a different pipeline '
                    f'for run {run_id} than rank 0 (fingerprint {fingerprint} '
                    f'vs {self.fingerprint}). Every rank must declare the same '
                    f'stages in the same order: do not make the pipeline '
                    f'depend on getRank() or on the host.')
            rk.ready, rk.slots = True, slots
        elif kind == 'out':
            _, run_id, outcomes = msg
            if run_id != self.run_id:
                return
            rk.work_messages += 1
            for o in outcomes:
                if rk.inflight.pop(o.batch, None) is not None:
                    if isinstance(o, Done):
                        o.host = src
                    out.append(o)

    def _check_ranks(self) -> None:
        for rk in self.ranks:
            if rk.r in self.w.gone and (rk.inflight or not rk.ready):
                raise JobStreamError(
                    f'Rank {rk.r} (host {rk.name}) finished its script without '
                    f'taking part in run {self.run_id}: every rank must run the '
                    f'same pipelines in the same order (do not make run() '
                    f'depend on getRank()).')

    def abort(self) -> None:
        self.local.abort()
        for rk in self.ranks:
            rk.inflight.clear()

    def end(self, error: Optional[BaseException] = None) -> None:
        """Tell every rank the run is over (with the error that ended it)."""
        if self.w.lost is not None:
            return  # a lost rank cannot be told; every rank leaves anyway
        blob = None
        if error is not None:
            blob = _error_for_ranks(error)
        for rk in self.ranks:
            self._send(rk, ('end', self.run_id, blob))
        self.w.ended = self.run_id
        self.link.flush(time.monotonic() + self.w.timeout)
        WIRE['bytes_received'] += sum(self.link.received_bytes.values())

    def hosts(self) -> list:
        out = [HostInfo(self.w.host(0), self.local.slots)]
        for rk in self.ranks:
            out.append(HostInfo(rk.name, rk.slots,
                                self.link.messages.get(rk.r, 0),
                                rk.work_messages,
                                self.link.seconds.get(rk.r, 0.0)))
        return out


def end_run(w: World, error: BaseException, started: bool) -> None:
    """Rank 0: end the current run on the other ranks with ``error``, unless
    :meth:`MPIExecutor.end` did.  ``started``: the run was started on rank 0;
    if not (e.g. its checkpoint was refused), the other ranks still wait for
    it, so it is ended before it begins."""
    if w.lost is not None or (started and w.ended == w.runs):
        return
    if not started:
        w.next_run()
    data = dumps(('end', w.runs, _error_for_ranks(error)))
    link = _Link(w)
    for r in range(1, w.size):
        link.send(r, TAG_DOWN, data)
    link.flush(time.monotonic() + w.timeout)
    w.ended = w.runs


def _error_for_ranks(error: BaseException) -> bytes:
    """The error other ranks raise from run(): same type, short message.

    A :class:`SystemExit` (a checkpoint-and-exit) becomes a quiet one with
    the same status: rank 0 already said why."""
    if isinstance(error, SystemExit):
        return dumps(_quiet_exit(error))
    note = '(raised on rank 0, where its traceback is printed)'
    try:
        copy = loads(dumps(error))
        copy.__cause__ = None
        copy.__notes__ = [note]
        return dumps(copy)
    except Exception:
        return dumps(JobStreamError(f'{type(error).__name__}: {error} {note}'))


def _quiet_exit(error: SystemExit) -> SystemExit:
    from ..checkpoint import CheckpointExit
    if isinstance(error, CheckpointExit):
        return CheckpointExit(error.message, quiet=True)
    code = error.code
    return SystemExit(code if code is None or isinstance(code, int) else 1)


def serve(w: World, fingerprint: str, processes: Optional[int]) -> None:
    """Ranks > 0: run rank 0's batches in the local pool until the run ends."""
    run_id = w.next_run()
    rank0_left = None  # when rank 0 was seen leaving without ending the run
    link = _Link(w)
    slots = processes or w.hosts[w.rank][1]
    link.send(0, TAG_UP, dumps(('ready', run_id, fingerprint, slots)))
    pool = shared_pool(slots)
    delay = MIN_POLL
    started = False
    while True:
        busy = False
        while True:
            got = link.receive(0, TAG_DOWN)
            if got is None:
                break
            busy = True
            msg = got[1]
            kind = msg[0]
            if kind == 'shared':
                shared.put(msg[1], msg[2])
            elif kind == 'run' and msg[1] == run_id:
                pool.start(loads(msg[2]))
                started = True
            elif kind == 'batch' and msg[1] == run_id and started:
                _, _, batch_id, chain, works, cuts, position = msg
                pool.submit(Batch(batch_id, chain, works,
                                  [(None, c, '?') for c in cuts],
                                  position=position))
            elif kind == 'end' and msg[1] == run_id:
                if msg[2] is not None:
                    pool.abort()
                    link.flush(time.monotonic() + w.timeout)
                    raise loads(msg[2])
                link.flush(time.monotonic() + w.timeout)
                return
        link.pump()
        if 0 in w.gone and not busy:
            # Rank 0 said goodbye; its last messages may still be on their
            # way (another communicator), so wait a little for them.
            rank0_left = rank0_left or time.monotonic()
            if time.monotonic() - rank0_left > GRACE_SECONDS:
                pool.abort()
                raise JobStreamError(
                    f'Rank 0 (host {w.host(0)}) finished its script without '
                    f'ending run {run_id}, which rank {w.rank} waits for: every '
                    f'rank must run the same pipelines in the same order (do '
                    f'not make run() depend on getRank()).')
        if pool.in_flight():
            outcomes = pool.wait(0 if busy else delay)
            if outcomes:
                busy = True
                link.send(0, TAG_UP, dumps(('out', run_id, outcomes)))
        elif not busy:
            time.sleep(delay)
        delay = MIN_POLL if busy else min(2 * delay, MAX_POLL)
