"""sweep under checkpoints (killed with SIGKILL, re-run until done) and under
``mpiexec -n 3``.

What is guaranteed, by design (DESIGN.md, "Front ends under checkpoints and
MPI"): with ``seed=S``, trial ``t`` of combination ``i`` draws from
``SeedSequence(S, spawn_key=(i, t))`` whoever runs it and however often;
statistics are taken in trial order and every decision about more trials
depends only on trials ``0..k``; the combination frames' stores (where that
bookkeeping lives) are checkpointed exactly once.  So a resumed sweep runs the
same trials and ends with the same table as an uninterrupted one, bit for
bit, provided the pilot (first batch) has the same size: the pilot is
``max(min, getCpuCount() // combinations)``, so the scripts set ``min`` above
the second term for every run compared here.
"""
import csv
import os
import signal
import subprocess
import sys

import pytest

from conftest import kill_when, script_env

SCRIPT = '''
import os, random, sys, time
from job_stream.baked import sweep
from job_stream.inline import getCpuCount, getRank

pilot, output = int(sys.argv[1]), sys.argv[2]
checkpoint = sys.argv[3] if len(sys.argv) > 3 else None
options = ({'checkpointFile': checkpoint, 'checkpointInterval': 0.05}
           if checkpoint else {})
with open(f'rank-{getRank()}.pid.new', 'w') as f:   # whole when it appears
    f.write(str(os.getpid()))
os.replace(f'rank-{getRank()}.pid.new', f'rank-{getRank()}.pid')
combos = 4
assert getCpuCount() // combos <= pilot, 'raise the pilot: this machine has more cores'
with sweep({'a': [1.0, 2.0], 'noise': [0.1, 0.2]}, seed=5, output=output,
           trialsParms={'min': pilot}, report=False, showProgress=False,
           **options) as w:
    @w.job
    def experiment(id, trial, a, noise):
        with open('trials.log', 'a') as f:
            f.write(f'{id} {trial} {os.getppid()}\\n')
        time.sleep(0.003)
        return {'y': random.gauss(a, noise * a)}
if getRank() > 0:
    print('rank', getRank(), 'table is None:', w.table is None)
'''


def pilot():
    """A ``min`` at least ``getCpuCount() // 4`` for a local run and for one
    of 3 ranks on this host, so both pilots are the same."""
    return max(4, 3 * len(os.sched_getaffinity(0)) // 4)


def read_table(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def trials_run(folder):
    """{(id, trial): number of calls}, and the set of parent pids."""
    calls, parents = {}, set()
    for line in (folder / 'trials.log').read_text().splitlines():
        id, trial, ppid = map(int, line.split())
        calls[id, trial] = calls.get((id, trial), 0) + 1
        parents.add(ppid)
    return calls, parents


def check_table(rows, runs):
    """The stopping rule was met (or the maximum reached), and each row's
    trial count is exactly the trials 0..n-1 that ran."""
    for row in rows:
        i, n = int(row['id']), int(row['trials'])
        assert {t for (j, t) in runs if j == i} == set(range(n)), i
        y, err = float(row['y']), float(row['y_err'])
        assert err <= max(0.1 * abs(y), 0.01) or n == 10000, row


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp('plain')
    (folder / 'script.py').write_text(SCRIPT)
    proc = subprocess.run([sys.executable, 'script.py', str(pilot()), 'table.csv'],
                          cwd=folder, env=script_env(), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    runs, _ = trials_run(folder)
    return read_table(folder / 'table.csv'), runs


def lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def test_killed_sweep_resumes_to_the_same_table(tmp_path, uninterrupted):
    (tmp_path / 'script.py').write_text(SCRIPT)
    command = [sys.executable, 'script.py', str(pilot()), 'table.csv', 'run.chk']
    kills = runs = 0
    while True:
        runs += 1
        assert runs <= 5, 'the sweep does not finish'
        start = lines(tmp_path / 'trials.log')
        proc = subprocess.Popen(command, cwd=tmp_path, env=script_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)
        if kills < 2:
            # kill once this run has a checkpoint and ran 25 more trials
            kills += kill_when(proc, lambda: (
                (tmp_path / 'run.chk').exists()
                and lines(tmp_path / 'trials.log') >= start + 25))
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
        assert not (tmp_path / 'table.csv').exists()       # no table yet
    assert kills == 2
    assert 'Resuming from the checkpoint' in err
    assert out.count('y_err') == 1                         # printed once
    rows = read_table(tmp_path / 'table.csv')
    expected_rows, expected_runs = uninterrupted
    assert rows == expected_rows                           # bit for bit
    calls, _ = trials_run(tmp_path)
    assert set(calls) == set(expected_runs)                # the same trials
    check_table(rows, calls)
    assert len(rows) == 4
    assert sum(calls.values()) > len(calls)                # kills re-ran some


def test_sweep_under_mpi_matches_local(tmp_path, uninterrupted, run_script):
    proc = run_script(SCRIPT, pilot(), 'table.csv',
                      launcher=['mpiexec', '-n', '3'], timeout=180)
    assert proc.stdout.count('y_err') == 1, proc.stdout    # rank 0 only
    assert 'rank 1 table is None: True' in proc.stdout
    assert 'rank 2 table is None: True' in proc.stdout
    rows = read_table(tmp_path / 'table.csv')
    expected_rows, expected_runs = uninterrupted
    assert rows == expected_rows
    calls, parents = trials_run(tmp_path)
    assert set(calls) == set(expected_runs)
    assert all(n == 1 for n in calls.values())
    check_table(rows, calls)
    rank_of = {int((tmp_path / f'rank-{r}.pid').read_text()): r for r in range(3)}
    ranks = {rank_of[p] for p in parents}
    assert len(ranks) >= 2, f'trials ran on ranks {ranks} only'


@pytest.mark.slow
def test_sweep_under_mpi_killed_resumes_to_the_same_table(tmp_path, uninterrupted):
    """Rank 0 (the primary, holding the checkpoint) is SIGKILLed twice under
    ``mpiexec -n 3``; the same command resumes to the uninterrupted table."""
    (tmp_path / 'script.py').write_text(SCRIPT)
    command = ['mpiexec', '-n', '3', sys.executable, 'script.py', str(pilot()),
               'table.csv', 'run.chk']
    rank0 = tmp_path / 'rank-0.pid'
    kills = runs = 0
    while True:
        runs += 1
        assert runs <= 5, 'the sweep does not finish'
        start = lines(tmp_path / 'trials.log')
        rank0.unlink(missing_ok=True)
        proc = subprocess.Popen(command, cwd=tmp_path,
                                env=script_env(unbuffered=False),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)
        if kills < 2:
            ready = lambda: (rank0.exists() and (tmp_path / 'run.chk').exists()
                             and lines(tmp_path / 'trials.log') >= start + 25)
            # the kill goes to rank 0, not to mpiexec
            kills += kill_when(proc, ready, pid=lambda: int(rank0.read_text()))
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            break
        assert not (tmp_path / 'table.csv').exists(), err
    assert kills == 2
    assert 'Resuming from the checkpoint' in err
    assert out.count('y_err') == 1
    expected_rows, expected_runs = uninterrupted
    assert read_table(tmp_path / 'table.csv') == expected_rows
    calls, _ = trials_run(tmp_path)
    assert set(calls) == set(expected_runs)
