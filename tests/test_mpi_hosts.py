"""Real multi-host runs: three ssh hosts in network namespaces
(../shared/tools/netns-cluster, needs root; .ci/install-mpi-deps installs
sshd and iproute2).  The cluster is started for this module and removed in
the fixture's finalizer."""
import os
import re
import subprocess
import sys
import time

import pytest

from cluster_helpers import NetnsCluster
from conftest import script_env

# Our own cluster (state dir, names, subnet), apart from anyone else's.
CLUSTER = NetnsCluster({'NETNS_CLUSTER_STATE': '/run/jsmpi-test-cluster',
                        'NETNS_CLUSTER_PREFIX': 'jsmt',
                        'NETNS_CLUSTER_NET': '10.231.78'})
HOSTS = ['jsmt1', 'jsmt2', 'jsmt3']
_tool = CLUSTER.tool

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def cluster():
    with CLUSTER.up(3) as env:
        yield env


@pytest.fixture
def hostfile(tmp_path):
    path = tmp_path / 'hosts.txt'
    path.write_text('jsmt1 cpus=2   # rank 0\njsmt2\njsmt3 cpus=1\n')
    return path


WORK = '''
import socket, sys, time
from job_stream.inline import Work, getRank
seconds = float(sys.argv[1])
w = Work(range(int(sys.argv[2])), processes=1)
@w.job
def job(x):
    time.sleep(seconds)
    return (x, socket.gethostname())
out = w.run()
if out is not None:
    print('RESULTS', len(out), sum(x for x, _ in out),
          sorted(set(h for _, h in out)))
'''


def _launch(cluster, hostfile, tmp_path, *args):
    script = tmp_path / 'work.py'
    script.write_text(WORK)
    return subprocess.Popen(
        [sys.executable, '-m', 'job_stream', '--hostfile', str(hostfile), '--',
         sys.executable, str(script), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, env=script_env(cluster, unbuffered=False))


def _leftovers(tmp_path):
    out = subprocess.run(['pgrep', '-f', str(tmp_path / 'work.py')],
                         capture_output=True, text=True).stdout.split()
    return [p for p in out if int(p) != os.getpid()]


def test_hostfile_run_uses_every_host(cluster, hostfile, tmp_path):
    proc = _launch(cluster, hostfile, tmp_path, 0.01, 300)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert 'RESULTS 300 44850' in out
    assert "['jsmt1', 'jsmt2', 'jsmt3']" in out
    for i, host in enumerate(HOSTS):
        line = re.search(rf'^{i}_{host} (\d+)% user time', err, re.M)
        assert line and int(line.group(1)) > 0, err


@pytest.mark.parametrize('failure', ['cut', 'kill'])
def test_lost_host_ends_run_within_bound(cluster, hostfile, tmp_path, failure):
    proc = _launch(cluster, hostfile, tmp_path, 0.05, 100000)
    try:
        # wait until the run is under way on every host (bounded)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ns = _tool('pids', 'jsmt2').stdout.split()
            if len(ns) >= 3 and proc.poll() is None:
                break
            time.sleep(0.5)
        time.sleep(3)  # let batches flow
        assert proc.poll() is None, proc.communicate()
        t0 = time.monotonic()
        _tool(failure, 'jsmt2')
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
        assert proc.returncode != 0, err
        assert took < 10, (took, err)
        # named by rank 0 (cut) or by mpiexec, by address (killed)
        assert 'jsmt2' in err or '10.231.78.2' in err, err
        # no rank is left anywhere within the bound
        deadline = t0 + 10
        while _leftovers(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _leftovers(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _tool('heal', 'jsmt2', check=False)
