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
import math
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


def allocation_hosts(with_source: bool = False):
    """Hosts of the SLURM or PBS allocation this runs in, or None; with
    ``with_source``, a pair (hosts, the variable they came from)."""
    hosts, source = None, None
    nodelist = os.environ.get('SLURM_JOB_NODELIST') or os.environ.get('SLURM_NODELIST')
    nodefile = os.environ.get('PBS_NODEFILE')
    if nodelist:
        try:
            names = subprocess.run(['scontrol', 'show', 'hostnames', nodelist],
                                   capture_output=True, text=True, timeout=10,
                                   check=True).stdout.split()
        except (OSError, subprocess.SubprocessError):
            names = expand_nodelist(nodelist)
        hosts = [Host(n) for n in names]
        source = f'SLURM_JOB_NODELIST={nodelist}'
    elif nodefile and os.path.exists(nodefile):
        names: list = []
        with open(nodefile) as f:
            for line in f:
                if line.strip() and line.strip() not in names:
                    names.append(line.strip())
        hosts = [Host(n) for n in names]
        source = f'PBS_NODEFILE={nodefile}'
    return (hosts, source) if with_source else hosts


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


# -- usable cores of this host --------------------------------------------------
def usable_cpus() -> int:
    """Cores this process may use: its CPU affinity (which a cgroup cpuset,
    ``taskset`` or a batch system's binding narrows), bounded by its
    cgroup's CPU quota (:func:`cgroup_cpu_limit`) and, inside a SLURM job,
    by the CPUs allocated on this node (``SLURM_CPUS_ON_NODE``: a cluster
    without CPU binding leaves the affinity at the whole machine; ignored
    when ``SLURMD_NODENAME`` names another node, i.e. the environment was
    forwarded from there); at least 1.  The quota is read once per
    process (reading it costs ~0.2 ms, and a pool is sized at every run)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        count = os.cpu_count() or 1
    limit = _own_cgroup_cpu_limit()
    if limit is not None:
        count = min(count, limit)
    allocated = os.environ.get('SLURM_CPUS_ON_NODE', '')
    node = os.environ.get('SLURMD_NODENAME')
    if (allocated.isdigit() and int(allocated) > 0
            and 'SLURM_JOB_ID' in os.environ
            # not a value forwarded from another node by the launcher
            and (node is None
                 or node.split('.')[0] == socket.gethostname().split('.')[0])):
        count = min(count, int(allocated))
    return max(1, count)


@functools.lru_cache(maxsize=1)
def _own_cgroup_cpu_limit() -> Optional[int]:
    return cgroup_cpu_limit()


def cgroup_cpu_limit(proc: str = '/proc/self') -> Optional[int]:
    """CPUs the CPU quota of this process's cgroup allows, rounded up: cgroup
    v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``, the
    smallest along the cgroup and its ancestors; None when there is no quota
    (or no cgroup file system, as on macOS).  ``proc`` is the /proc folder
    of the process (tests give a fake one)."""
    try:
        with open(os.path.join(proc, 'cgroup')) as f:
            memberships = f.read().splitlines()
        with open(os.path.join(proc, 'mountinfo')) as f:
            mounts = f.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in memberships:
        hierarchy, controllers, path = line.split(':', 2)
        v2 = hierarchy == '0' and not controllers
        if not v2 and 'cpu' not in controllers.split(','):
            continue
        for root, mountpoint in _cgroup_mounts(mounts, v2):
            relative = path[len(root):] if path.startswith(root) else path
            folder = os.path.normpath(mountpoint + '/' + relative.lstrip('/'))
            while folder.startswith(mountpoint):
                quota = _read_quota(folder, v2)
                if quota is not None:
                    limits.append(quota)
                if folder == mountpoint:
                    break
                folder = os.path.dirname(folder)
    return max(1, math.ceil(min(limits))) if limits else None


def _cgroup_mounts(mounts: list, v2: bool) -> list:
    """(root, mount point) of the cgroup file systems with the cpu
    controller (v1) or of the cgroup2 file system (v2), from mountinfo."""
    found = []
    for line in mounts:
        fields, sep, tail = line.partition(' - ')
        fields, tail = fields.split(), tail.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if v2 and tail[0] == 'cgroup2':
            found.append((fields[3], fields[4]))
        elif not v2 and tail[0] == 'cgroup' and 'cpu' in tail[2].split(','):
            found.append((fields[3], fields[4]))
    return found


def _read_quota(folder: str, v2: bool) -> Optional[float]:
    """CPUs of one cgroup's quota, or None if it sets none."""
    try:
        if v2:
            with open(os.path.join(folder, 'cpu.max')) as f:
                quota, _, period = f.read().strip().partition(' ')
        else:
            with open(os.path.join(folder, 'cpu.cfs_quota_us')) as f:
                quota = f.read().strip()
            with open(os.path.join(folder, 'cpu.cfs_period_us')) as f:
                period = f.read().strip()
        if quota in ('max', '-1') or not period:
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None
