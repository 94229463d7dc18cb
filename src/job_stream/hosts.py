"""Hosts of a run: hostfiles, ``--host`` lists, batch allocations.

Hostfile syntax (also each comma-separated entry of ``--host``)::

    # comments start with '#', also after the properties
    node1 cpus=4
    node2            # all its cores
    10.0.0.7 cpus=2

An unknown property fails with ``Unparseable property: NAME``, a bare word
with ``Unparseable properties: WORDS``, a host listed twice with
``Duplicate host entry? NAME``.

    >>> parse_hosts('a cpus=2  # fast\\nb\\n')
    [Host(name='a', cpus=2), Host(name='b', cpus=None)]
"""
from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import Optional

# Environment variable through which the job_stream command tells each rank
# the cpus= of every host: "name=cpus,name=cpus" (names as listed).
CPUS_ENV = 'JOB_STREAM_HOST_CPUS'


class HostfileError(ValueError):
    """A hostfile or --host list cannot be parsed; the message says where."""


@dataclass
class Host:
    name: str
    cpus: Optional[int] = None


def parse_hosts(text: str, where: str = 'hostfile') -> list:
    """Parse hostfile text into a list of :class:`Host`, in order."""
    hosts: list = []
    seen: set = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        name, *props = line.split()
        host = Host(name)
        bare = [p for p in props if '=' not in p]
        if bare:
            raise HostfileError(f'Unparseable properties: {" ".join(bare)} '
                                f'({where}, line {number})')
        for prop in props:
            key, _, value = prop.partition('=')
            if key != 'cpus':
                raise HostfileError(f'Unparseable property: {key} '
                                    f'({where}, line {number})')
            if not value.isdigit() or int(value) < 1:
                raise HostfileError(f'cpus must be a positive integer, not '
                                    f'{value!r} ({where}, line {number})')
            host.cpus = int(value)
        if name in seen:
            raise HostfileError(f'Duplicate host entry? {name}')
        seen.add(name)
        hosts.append(host)
    return hosts


def parse_host_option(value: str) -> list:
    """``--host 'h1,h2 cpus=2'`` -> hosts."""
    return parse_hosts('\n'.join(value.split(',')), where='--host')


def read_hostfile(path: str) -> list:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise HostfileError(f'Cannot read the hostfile {path}: {e.strerror}.')
    hosts = parse_hosts(text, where=path)
    if not hosts:
        raise HostfileError(f'The hostfile {path} lists no host.')
    return hosts


# -- batch allocations ---------------------------------------------------------
def expand_nodelist(spec: str) -> list:
    """Expand a SLURM node list: ``'n[1-3,7],gpu01'`` -> n1 n2 n3 n7 gpu01.

    >>> expand_nodelist('a[01-03],b7')
    ['a01', 'a02', 'a03', 'b7']
    """
    out: list = []
    for part in re.findall(r'[^,\[]+(?:\[[^\]]*\])?[^,]*', spec):
        m = re.fullmatch(r'([^\[]*)\[([^\]]*)\](.*)', part)
        if not m:
            out.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for r in ranges.split(','):
            lo, _, hi = r.partition('-')
            if not hi:
                out.append(f'{prefix}{lo}{suffix}')
                continue
            for i in range(int(lo), int(hi) + 1):
                out.append(f'{prefix}{i:0{len(lo)}d}{suffix}')
    return out


def allocation_hosts() -> Optional[list]:
    """Hosts of the SLURM or PBS allocation this runs in, or None."""
    nodelist = os.environ.get('SLURM_JOB_NODELIST') or os.environ.get('SLURM_NODELIST')
    if nodelist:
        try:
            names = subprocess.run(['scontrol', 'show', 'hostnames', nodelist],
                                   capture_output=True, text=True, timeout=10,
                                   check=True).stdout.split()
        except (OSError, subprocess.SubprocessError):
            names = expand_nodelist(nodelist)
        return [Host(n) for n in names]
    nodefile = os.environ.get('PBS_NODEFILE')
    if nodefile and os.path.exists(nodefile):
        names: list = []
        with open(nodefile) as f:
            for line in f:
                if line.strip() and line.strip() not in names:
                    names.append(line.strip())
        return [Host(n) for n in names]
    return None


# -- on each rank -----------------------------------------------------------------
def is_local(name: str) -> bool:
    """True if ``name`` is this machine."""
    if name in ('localhost', '127.0.0.1', '::1'):
        return True
    return name in _my_names()


@functools.lru_cache(maxsize=1)
def _my_names() -> frozenset:
    names = {socket.gethostname(), socket.gethostname().split('.')[0]}
    try:
        names.add(socket.getfqdn())
        for info in socket.getaddrinfo(socket.gethostname(), None):
            names.add(info[4][0])
    except OSError:
        pass
    try:
        out = subprocess.run(['hostname', '-I'], capture_output=True, text=True,
                             timeout=5).stdout
        names.update(out.split())
    except (OSError, subprocess.SubprocessError):
        pass
    return frozenset(names)


def cpus_here() -> Optional[int]:
    """This host's ``cpus=`` as given to the job_stream command, if any; a
    host matches its entry by name or by IP address."""
    spec = os.environ.get(CPUS_ENV)
    if not spec:
        return None
    table = {}
    for item in spec.split(','):
        name, _, cpus = item.rpartition('=')
        if name and cpus.isdigit():
            table[name] = int(cpus)
    mine = _my_names()
    for name, cpus in table.items():
        if name in mine:
            return cpus
        try:
            if socket.gethostbyname(name) in mine:
                return cpus
        except OSError:
            continue
    return None
