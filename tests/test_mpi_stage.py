"""``job_stream --stage``: files copied over ssh to a scratch folder on each
host, ranks started there, folders removed at the end.

Three ssh hosts in network namespaces (../shared/tools/netns-cluster, needs
root; .ci/install-mpi-deps installs sshd and iproute2), our own cluster
(state dir, names, subnet) apart from tests/test_mpi_hosts.py's.  The hosts
share this file system, so the test proves the copy by where the ranks run
and read from: each host's own fresh scratch folder, not the test's folder.
"""
import glob
import os
import re
import subprocess
import sys

import pytest

from cluster_helpers import NetnsCluster
from conftest import script_env

CLUSTER = NetnsCluster({'NETNS_CLUSTER_STATE': '/run/jsmpi-stage-cluster',
                        'NETNS_CLUSTER_PREFIX': 'jsst',
                        'NETNS_CLUSTER_NET': '10.231.79'})
HOSTS = ['jsst1', 'jsst2', 'jsst3']
SCRATCH = '/tmp/job_stream-stage.*'

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def cluster():
    with CLUSTER.up(3) as env:
        yield env


SCRIPT = '''
import os, socket, sys
sys.path.insert(0, 'lib')
import helper                      # staged folder lib/
from job_stream.inline import Work, getRank

def read():
    with open('data.txt') as f:    # staged file, relative to the cwd
        return f.read().strip()

print('RANK', getRank(), socket.gethostname(), os.getcwd(),
      os.path.dirname(os.path.abspath(__file__)), read(), sys.argv[1:],
      flush=True)
w = Work(range(30), processes=1)

@w.job
def job(x):
    return (helper.double(x), socket.gethostname(), os.getcwd(), read())

out = w.run()
if out is not None:
    print('RESULTS', sum(x for x, _, _, _ in out),
          sorted(set((h, c, t) for _, h, c, t in out)), flush=True)
'''


def _run(cluster, tmp_path, *args, timeout=180):
    return subprocess.run(
        [sys.executable, '-m', 'job_stream', *args], capture_output=True,
        text=True, timeout=timeout, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env=script_env(cluster, unbuffered=False))


def test_stage_copies_script_and_files_to_each_host(cluster, tmp_path):
    (tmp_path / 'work.py').write_text(SCRIPT)
    (tmp_path / 'data.txt').write_text('staged data\n')
    (tmp_path / 'lib').mkdir()
    (tmp_path / 'lib' / 'helper.py').write_text('def double(x):\n    return 2 * x\n')
    before = set(glob.glob(SCRATCH))
    p = _run(cluster, tmp_path, '-v', '--host', ','.join(HOSTS),
             '--stage', 'data.txt', '--stage', 'lib', '--', 'python', 'work.py',
             'data.txt')
    assert p.returncode == 0, p.stderr
    ranks = sorted(line.split(None, 5) for line in p.stdout.splitlines()
                   if line.startswith('RANK'))
    assert [r[1:3] for r in ranks] == [['0', 'jsst1'], ['1', 'jsst2'], ['2', 'jsst3']]
    folders = [r[3] for r in ranks]
    # each host ran in its own fresh scratch folder, holding the script and
    # the data, and its argument naming a staged file points there
    assert len(set(folders)) == 3, ranks
    for _, _, _, cwd, script_dir, rest in ranks:
        assert re.fullmatch(r'/tmp/job_stream-stage\.\w{6}', cwd), cwd
        assert script_dir == cwd
        assert rest == f"staged data ['{cwd}/data.txt']"
    assert str(tmp_path) not in p.stdout
    # the workers (one per host) ran there too, and every item was processed
    results = next(l for l in p.stdout.splitlines() if l.startswith('RESULTS'))
    assert results == 'RESULTS 870 ' + str(sorted(
        (h, f, 'staged data') for h, f in zip(HOSTS, folders)))
    # the copy went over ssh, named in the verbose line
    assert 'staged 3 files to jsst1:' in p.stderr, p.stderr
    # and the scratch folders are gone
    assert set(glob.glob(SCRATCH)) == before
    for folder in folders:
        assert not os.path.exists(folder)


def test_stage_refuses_bad_input(cluster, tmp_path):
    (tmp_path / 'work.py').write_text(SCRIPT)
    before = set(glob.glob(SCRATCH))
    p = _run(cluster, tmp_path, '--host', 'jsst1,jsst2', '--stage', 'missing.txt',
             '--', 'python', 'work.py')
    assert p.returncode == 1
    assert (f'Cannot stage missing.txt: no such file or folder (give paths '
            f'relative to {tmp_path}, or absolute).') in p.stderr
    # a host that cannot be reached: named, nothing started, and the folder
    # already made on the reachable host removed
    p = _run(cluster, tmp_path, '--host', 'jsst1,nosuchhost-jsst', '--stage',
             'work.py', '--', 'python', 'work.py')
    assert p.returncode == 1
    assert 'Could not stage files to host nosuchhost-jsst: ssh: Could not ' \
           'resolve hostname' in p.stderr, p.stderr
    assert 'Check that "ssh nosuchhost-jsst" works without a password' in p.stderr
    assert 'RANK' not in p.stdout
    assert set(glob.glob(SCRATCH)) == before
