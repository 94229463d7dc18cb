"""Timing accounting and the end-of-run report.

The report keeps the original job_stream's format, which users' tools parse::

    0_myhost 97% user time (1% mpi), 96% user cpu, 212 messages (98% user)
    C 97% user time, 96% user cpu, quality 1.93 cpus, ran 4.120s

Per host: *user time* is the share of its worker slots' wall time spent in
user code; *user cpu* the CPU time spent in user code, as a share of the same
slot time (so sleeping jobs show high user time and low user cpu); *mpi* the
share spent moving messages; *messages* how many were exchanged with the
host and the share of them that carried work.  *quality* is user CPU seconds
per wall second: the number of cores the run really used.  Every number is
measured, per batch, by the process that ran it.

Then one line per job stage (name, items it was given, cache hits, seconds
in the stage: its user code, plus cache look-ups for a cached stage)::

    stage square: 1000 items, 250 cache hits, 3.210s user
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HostInfo:
    """What an executor knows of one host (or rank) at the end of a run."""
    name: str
    slots: int
    messages: int = 0
    work_messages: int = 0
    comm_seconds: float = 0.0


class Stats:
    """Counters of a run, kept by the Processor per chain and per host."""

    def __init__(self, pipeline=None):
        self.items: dict = {}        # chain id -> items run
        self.chain_wall: dict = {}   # chain id -> seconds in user code
        self.host_wall: dict = {}    # host index -> seconds in user code
        self.host_cpu: dict = {}     # host index -> CPU seconds in user code
        self.callback_wall = 0.0     # reducer/frame callbacks (primary)
        self.callback_cpu = 0.0
        # Per job stage, in pipeline order: [name, items, cache hits, seconds].
        self.stages: dict = {}       # (chain id, index in chain) -> row
        for chain in getattr(pipeline, 'chains', ()):
            for i, job in enumerate(chain.jobs):
                self.stages[chain.id, i] = [job.name, 0, 0, 0.0]

    def batch_done(self, chain: int, host: int, items: int, wall: float,
                   cpu: float, stages: list = None) -> None:
        if stages:
            for i, (n, hits, seconds) in enumerate(stages):
                row = self.stages.get((chain, i))
                if row is not None:
                    row[1] += n
                    row[2] += hits
                    row[3] += seconds
        self.items[chain] = self.items.get(chain, 0) + items
        self.chain_wall[chain] = self.chain_wall.get(chain, 0.0) + wall
        self.host_wall[host] = self.host_wall.get(host, 0.0) + wall
        self.host_cpu[host] = self.host_cpu.get(host, 0.0) + cpu

    def callback(self, wall: float, cpu: float) -> None:
        self.callback_wall += wall
        self.callback_cpu += cpu

    def report(self, hosts: list, seconds: float) -> str:
        """The end-of-run report for ``hosts`` (list of :class:`HostInfo`)."""
        seconds = max(seconds, 1e-9)
        lines = []
        total_slots = total_wall = total_cpu = 0.0
        for i, host in enumerate(hosts):
            wall = self.host_wall.get(i, 0.0)
            cpu = self.host_cpu.get(i, 0.0)
            if i == 0:
                wall += self.callback_wall
                cpu += self.callback_cpu
            slot_seconds = max(host.slots, 1) * seconds
            total_slots += slot_seconds
            total_wall += wall
            total_cpu += cpu
            user_msgs = (100.0 * host.work_messages / host.messages
                         if host.messages else 0.0)
            lines.append(
                f'{i}_{host.name} {_pct(wall, slot_seconds)}% user time '
                f'({_pct(host.comm_seconds, slot_seconds)}% mpi), '
                f'{_pct(cpu, slot_seconds)}% user cpu, {host.messages} '
                f'messages ({user_msgs:.0f}% user)')
        lines.append(
            f'C {_pct(total_wall, total_slots)}% user time, '
            f'{_pct(total_cpu, total_slots)}% user cpu, quality '
            f'{total_cpu / seconds:.2f} cpus, ran {seconds:.3f}s')
        for name, items, hits, wall in self.stage_rows():
            lines.append(f'stage {name}: {items} items, {hits} cache hits, '
                         f'{wall:.3f}s user')
        return '\n'.join(lines)

    def stage_rows(self) -> list:
        """``[name, items, cache hits, seconds]`` per job stage, in
        pipeline order (stages that received no work included)."""
        order = sorted(self.stages, key=lambda k: (-k[0], k[1]))
        return [list(self.stages[k]) for k in order]


def _pct(part: float, whole: float) -> str:
    return f'{100.0 * part / whole:.0f}' if whole > 0 else '0'
