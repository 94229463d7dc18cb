"""Usable cores and batch allocations: a host's cores come from its CPU
affinity, its cgroup's CPU quota and its SLURM allocation, not from the
machine's total; inside a SLURM job the hosts come from SLURM_JOB_NODELIST.

The cgroup test makes a real cgroup with a CPU quota of one CPU (cgroup v1
``cpu`` hierarchy, or ``systemd-run --scope`` / a cgroup v2 folder) and runs
scripts inside it; root needed.  The SLURM test starts the single-node test
cluster with ../shared/tools/slurm-up (packages from .ci/install-slurm-deps)
and stops it at the end unless it was already running.
"""
import contextlib
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from cluster_helpers import slurm_cluster
from conftest import script_env

CORES = '''
import os, time
import job_stream
from job_stream.inline import getHostCpuCount, getCpuCount, getRank

def pid(x):
    time.sleep(0.05)
    return os.getpid()

pids = job_stream.map(pid, range(8), report=False)
print('CORES', getRank(), getHostCpuCount(), getCpuCount(),
      None if pids is None else len(set(pids)), flush=True)
'''


def _cores(proc):
    """{rank: (host cpus, cpus of the run, distinct worker pids)}"""
    assert proc.returncode == 0, proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith('CORES'):
            _, rank, host, total, pids = line.split()
            out[int(rank)] = (int(host), int(total), pids)
    return out


def _mounts():
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields, _, tail = line.partition(' - ')
            yield fields.split()[4], tail.split()


@contextlib.contextmanager
def one_cpu_cgroup(tmp_path):
    """A command prefix that runs a program in a new cgroup whose CPU quota
    is one CPU (removed at the end)."""
    v1 = [mp for mp, tail in _mounts() if tail[0] == 'cgroup'
          and 'cpu' in tail[2].split(',')]
    v2 = [mp for mp, tail in _mounts() if tail[0] == 'cgroup2']
    if v1:
        folder = pathlib.Path(v1[0]) / f'job_stream-test-{os.getpid()}'
        folder.mkdir()
        period = int((folder / 'cpu.cfs_period_us').read_text())
        (folder / 'cpu.cfs_quota_us').write_text(str(period))
        try:
            yield ['sh', '-c', f'echo $$ > {folder}/cgroup.procs && exec "$@"', 'sh']
        finally:
            folder.rmdir()  # its processes have exited
    elif v2 and os.path.isdir('/run/systemd/system'):
        yield ['systemd-run', '--scope', '--quiet', '-p', 'CPUQuota=100%', '--']
    elif v2:
        root = pathlib.Path(v2[0])
        (root / 'cgroup.subtree_control').write_text('+cpu')
        folder = root / f'job_stream-test-{os.getpid()}'
        folder.mkdir()
        (folder / 'cpu.max').write_text('100000 100000')
        try:
            yield ['sh', '-c', f'echo $$ > {folder}/cgroup.procs && exec "$@"', 'sh']
        finally:
            folder.rmdir()
    else:
        pytest.fail('no cgroup file system with the cpu controller is mounted')


def test_cgroup_quota_and_affinity_bound_host_cpus(tmp_path):
    (tmp_path / 'cores.py').write_text(CORES)
    env = script_env(unbuffered=False)
    run = dict(capture_output=True, text=True, timeout=120, cwd=tmp_path,
               env=env, stdin=subprocess.DEVNULL)
    machine = len(os.sched_getaffinity(0))
    free = _cores(subprocess.run([sys.executable, 'cores.py'], **run))
    assert free[0][:2] == (machine, machine)
    with one_cpu_cgroup(tmp_path) as prefix:
        # alone: one core, so a pool of one worker
        alone = _cores(subprocess.run(prefix + [sys.executable, 'cores.py'], **run))
        assert alone == {0: (1, 1, '1')}
        # two ranks under the job_stream command: one core each
        ranks = _cores(subprocess.run(
            prefix + [sys.executable, '-m', 'job_stream', '--host',
                      'localhost,127.0.0.1', '--', sys.executable, 'cores.py'],
            **run))
        assert ranks == {0: (1, 2, '2'), 1: (1, 2, 'None')} or \
            ranks == {0: (1, 2, '1'), 1: (1, 2, 'None')}, ranks
    # CPU affinity (taskset; a cgroup cpuset narrows it the same way)
    pinned = _cores(subprocess.run(['taskset', '-c', '0', sys.executable,
                                    'cores.py'], **run))
    assert pinned == {0: (1, 1, '1')}


@pytest.mark.parametrize('version', ['v1', 'v2'])
def test_cgroup_quota_smallest_along_ancestors(tmp_path, version):
    """The parser reads the cgroup's files and its ancestors' (a quota on a
    parent bounds its children), from a /proc and a cgroup tree on disk."""
    from job_stream.hosts import cgroup_cpu_limit
    proc, mount = tmp_path / 'proc', tmp_path / 'cg'
    proc.mkdir()
    (mount / 'job' / 'step').mkdir(parents=True)
    if version == 'v2':
        (proc / 'cgroup').write_text('0::/job/step\n')
        (proc / 'mountinfo').write_text(
            f'30 20 0:26 / {mount} rw - cgroup2 cgroup2 rw\n')
        (mount / 'job' / 'cpu.max').write_text('250000 100000\n')
        (mount / 'job' / 'step' / 'cpu.max').write_text('max 100000\n')
    else:
        (proc / 'cgroup').write_text('4:memory:/x\n3:cpu,cpuacct:/job/step\n')
        (proc / 'mountinfo').write_text(
            f'32 31 0:29 / {mount} rw - cgroup cgroup rw,cpu,cpuacct\n')
        for folder, quota in ((mount, -1), (mount / 'job', 250000),
                              (mount / 'job' / 'step', 400000)):
            (folder / 'cpu.cfs_quota_us').write_text(f'{quota}\n')
            (folder / 'cpu.cfs_period_us').write_text('100000\n')
    assert cgroup_cpu_limit(str(proc)) == 3  # 2.5 CPUs, rounded up
    (proc / 'cgroup').write_text('0::/\n' if version == 'v2' else '3:cpu:/\n')
    assert cgroup_cpu_limit(str(proc)) is None


# -- inside a real SLURM allocation ----------------------------------------------
@pytest.fixture(scope='module')
def slurm():
    with slurm_cluster(keep_running=True):
        yield


def test_slurm_allocation_gives_hosts_and_cores(slurm, tmp_path):
    """``job_stream -- python cores.py`` in an sbatch job with 1 CPU: the
    host comes from SLURM_JOB_NODELIST (a configured hostfile naming another
    host is not used) and its usable cores are the allocation's."""
    (tmp_path / 'cores.py').write_text(CORES + textwrap.dedent('''
        print('NODELIST', os.environ['SLURM_JOB_NODELIST'])
    '''))
    config = tmp_path / 'config'
    (config / 'job_stream').mkdir(parents=True)
    (tmp_path / 'other-hosts').write_text('nosuchhost-jsst\n')
    (config / 'job_stream' / 'config').write_text(
        f'hostfile={tmp_path / "other-hosts"}\n')
    env = script_env({'XDG_CONFIG_HOME': str(config)}, unbuffered=False)
    proc = subprocess.run(
        ['sbatch', '--wait', '-c', '1', '-o', 'job.out', '-e', 'job.err',
         f'--chdir={tmp_path}',
         f'--wrap={sys.executable} -m job_stream -v -- {sys.executable} cores.py'],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    out = (tmp_path / 'job.out').read_text()
    err = (tmp_path / 'job.err').read_text()
    assert proc.returncode == 0, (proc.stderr, out, err)
    nodelist = next(l.split()[1] for l in out.splitlines() if l.startswith('NODELIST'))
    assert (f'job_stream: hosts from SLURM_JOB_NODELIST={nodelist}: {nodelist}; '
            f'started without MPI.') in err
    host, total, pids = next(l.split()[2:] for l in out.splitlines()
                             if l.startswith('CORES'))
    assert (host, total, pids) == ('1', '1', '1'), out



def test_slurm_cpus_of_another_node_are_ignored(monkeypatch):
    """``SLURM_CPUS_ON_NODE`` bounds this host's cores only when it was set
    on this node: the launcher forwards the first node's environment to
    every rank, and nodes of an allocation may differ."""
    import socket
    from job_stream.hosts import usable_cpus
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    unbound = usable_cpus()   # affinity and cgroup only
    assert unbound > 1, 'needs a host with 2 cores or more'
    monkeypatch.setenv('SLURM_JOB_ID', '1')
    monkeypatch.setenv('SLURM_CPUS_ON_NODE', '1')
    monkeypatch.delenv('SLURMD_NODENAME', raising=False)
    assert usable_cpus() == 1
    monkeypatch.setenv('SLURMD_NODENAME', socket.gethostname().split('.')[0])
    assert usable_cpus() == 1
    monkeypatch.setenv('SLURMD_NODENAME', 'another-node')
    assert usable_cpus() == unbound
