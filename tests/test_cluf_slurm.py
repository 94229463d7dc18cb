"""cluf on a real SLURM: dispatch subjobs and a job array, wait, check.

Starts the single-node test cluster with ../shared/tools/slurm-up (root
needed; packages from .ci/install-slurm-deps) and stops it at the end.
"""
import pathlib
import subprocess
import time

import pytest

from cluf_helpers import cluf, ran_once, write_script
from cluster_helpers import slurm_cluster
# Longest wait for submitted jobs to finish (they take ~1 s each once started).
JOBS_TIMEOUT = 180


@pytest.fixture(scope='module')
def slurm():
    with slurm_cluster():
        yield


def wait_for_jobs(job_ids, jobs_dir, bins):
    """Until squeue lists none of ``job_ids`` and every bin has a marker."""
    deadline = time.monotonic() + JOBS_TIMEOUT
    state = pathlib.Path(jobs_dir) / 'state'
    while time.monotonic() < deadline:
        queued = subprocess.run(['squeue', '-h', '-o', '%i', '-j', ','.join(job_ids)],
                                capture_output=True, text=True, timeout=30).stdout
        finished = [b for b in range(bins) if (state / f'bin-{b}.done').exists()
                    or (state / f'bin-{b}.failed').exists()]
        if not queued.strip() and len(finished) == bins:
            return
        time.sleep(0.5)
    logs = '\n'.join(p.read_text()[-2000:] for p in pathlib.Path(jobs_dir).glob('*.std*'))
    raise AssertionError(f'SLURM jobs {job_ids} not finished within {JOBS_TIMEOUT} s; '
                         f'squeue: {queued!r}; logs:\n{logs}')


def submitted_ids(stderr):
    return [line.rsplit(' ', 1)[1].rstrip('.') for line in stderr.splitlines()
            if line.startswith('cluf: submitted')]


def test_nodes_queue(slurm, tmp_path):
    script = write_script(tmp_path, n=10, code='''
        import time
        _record = target
        def target(a, b=0):
            # hold the subjobs in the queue until the test says go
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(OUT, '..', 'go')):
                assert time.monotonic() < deadline, 'no go'
                time.sleep(0.1)
            _record(a, b)
    ''')
    jobs = tmp_path / 'jobs'
    # no --scheduler: sbatch is installed, so SLURM is chosen
    proc = cluf(script, '--nodes', 3, '--queue', '-p', 1, '-j', jobs,
                '-e', 'CLUF_TEST_VALUE="on slurm"', cwd=tmp_path, check=0)
    ids = submitted_ids(proc.stderr)
    assert len(ids) == 3, proc.stderr
    status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
    assert f'in the queue: subjobs 0-2 (jobs {", ".join(sorted(ids))})' in status
    # submitting again while they are queued or running submits nothing
    proc = cluf(script, '--nodes', 3, '--queue', '-p', 1, '-j', jobs, cwd=tmp_path,
                check=0)
    assert 'subjobs 0-2 are still queued or running' in proc.stderr
    assert not submitted_ids(proc.stderr)
    (tmp_path / 'go').write_text('')
    wait_for_jobs(ids, jobs, 3)
    got = ran_once(tmp_path, 10)
    assert got[7] == ['70 - on slurm']
    status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
    assert 'done         3  bins 0-2' in status and '(slurm)' in status
    # resubmitting the same dispatch runs nothing again
    proc = cluf(script, '--nodes', 3, '--queue', '-p', 1, '-j', jobs, cwd=tmp_path,
                check=0)
    assert 'nothing to submit' in proc.stderr and not submitted_ids(proc.stderr)


def test_array_queue_with_resume(slurm, tmp_path):
    script = write_script(tmp_path, n=9, code='''
        _record = target
        def target(a, b=0):
            if a == 4 and not os.path.exists(os.path.join(OUT, '..', 'fixed')):
                raise ValueError('fails until fixed')
            _record(a, b)
    ''')
    jobs = tmp_path / 'jobs'
    common = ('--nodes', 5, '--array', '--max-array-size', 3, '--queue', '-p', 1,
              '-j', jobs)
    proc = cluf(script, *common, cwd=tmp_path, check=0)
    assert 'a job array of 3 tasks over 5 bins (2 per task)' in proc.stderr
    ids = submitted_ids(proc.stderr)
    assert len(ids) == 1
    wait_for_jobs(ids, jobs, 5)
    status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
    # argument 4 is in bin 4, the only bin of task 2
    assert 'failed       1  bins 4' in status and 'done         4  bins 0-3' in status
    assert 'ValueError: fails until fixed' in (jobs / 'target-2-3.stderr').read_text()
    (tmp_path / 'fixed').write_text('')
    proc = cluf(script, *common, cwd=tmp_path, check=0)
    assert 'submitted array tasks 2 as job' in proc.stderr, proc.stderr
    wait_for_jobs(submitted_ids(proc.stderr), jobs, 5)
    ran_once(tmp_path, 9)
    assert 'done         5  bins 0-4' in cluf('status', jobs, cwd=tmp_path).stdout
