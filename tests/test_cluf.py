"""cluf: bins, hashing, options, direct mode and script generation."""
import json
import subprocess
import sys
import time

import pytest

from cluf_helpers import calls, cluf, ran_once, write_script
from conftest import script_env
from job_stream import Arguments
from job_stream.cluf.bins import (BinSpecError, format_bins, make_binner,
                                  parse_bins, parse_selector, stable_hash)
from job_stream.cluf.direct import default_processes
from job_stream.cluf.options import OptionError, merge, parse_env


# -- bins, hashing, keys (unit) ------------------------------------------------
def test_parse_bins():
    assert parse_bins('3/10') == (frozenset({3}), 10)
    assert parse_bins('0-2,5/10') == (frozenset({0, 1, 2, 5}), 10)
    assert format_bins({0, 1, 2, 5, 7, 8}, 10) == '0-2,5,7-8/10'


@pytest.mark.parametrize('spec,msg', [
    ('3', 'expected "x/y"'), ('a/3', 'malformed'), ('1-/3', 'malformed'),
    ('3/3', 'bin 3 is out of range'), ('0/0', 'at least 1'),
    ('2-1/3', 'backwards')])
def test_bad_bins(spec, msg):
    with pytest.raises(BinSpecError, match=msg):
        parse_bins(spec)


def test_selector_and_hash_binning():
    assert parse_selector('0-2,5,my_kwarg', 'x') == [0, 1, 2, 5, 'my_kwarg']
    with pytest.raises(BinSpecError, match='malformed'):
        parse_selector('0,,x-', 'x')
    binner = make_binner(7, hash_spec='0,name')
    a = binner(0, Arguments(1, 2, name='n'))
    # position, other arguments and missing selections do not matter
    assert binner(99, Arguments(1, 3, name='n')) == a
    assert binner(0, Arguments(1, other='x')) == binner(5, (1,))
    assert 0 <= a < 7
    assert stable_hash(['a', 'b']) != stable_hash(['ab'])


def test_position_and_key_binning():
    assert [make_binner(3)(i, 'v') for i in range(5)] == [0, 1, 2, 0, 1]
    key = make_binner(4, key='day')
    assert key(0, Arguments(day=6)) == 2 and key(0, Arguments(day='5')) == 1
    with pytest.raises(BinSpecError, match='not an integer'):
        key(3, Arguments(day='monday'))
    with pytest.raises(BinSpecError, match='no argument'):
        key(3, (1,))
    with pytest.raises(BinSpecError, match='mutually exclusive'):
        make_binner(4, hash_spec='0', key='1')


HASH_CODE = ('from job_stream.cluf.bins import make_binner; from job_stream import '
             'Arguments; b = make_binner(1000, hash_spec="0-1,k"); print([b(0, '
             'Arguments(i, str(i) * 3, k=(i, "x"))) for i in range(20)])')


def test_hash_is_stable_across_processes():
    outs = []
    for seed in ('1', '2'):
        outs.append(subprocess.run(
            [sys.executable, '-c', HASH_CODE], capture_output=True, text=True,
            check=True, timeout=60,
            env=script_env({'PYTHONHASHSEED': seed})).stdout)
    assert outs[0] == outs[1]
    assert len(set(eval(outs[0]))) > 10   # spread over bins


# -- options (unit) -----------------------------------------------------------
def test_option_precedence_and_errors():
    o = merge({'processes': '3'}, {'processes': 2, 'nodes': 4},
              {'nodes': 9, 'jobs_dir': 'rc', 'env': 'A=1'})
    assert (o['processes'], o['nodes'], o['jobs_dir'], o['env']) == (3, 4, 'rc', {'A': '1'})
    with pytest.raises(OptionError, match='valid options are: append_script, append_statements, args'):
        merge({}, {'nodez': 1}, {})
    with pytest.raises(OptionError, match='only on the command line'):
        merge({}, {'mode': 'dispatch'}, {})
    with pytest.raises(OptionError, match='positive integer'):
        merge({'nodes': '0'}, {}, {})
    assert parse_env('A=1 B="x y" C=') == {'A': '1', 'B': 'x y', 'C': ''}
    with pytest.raises(OptionError, match='NAME=VALUE'):
        parse_env('A')


# -- direct mode (end to end) ---------------------------------------------------
def test_direct_runs_every_argument_once(tmp_path):
    script = write_script(tmp_path, n=12)
    proc = cluf(script, '-p', 2, cwd=tmp_path, check=0)
    got = ran_once(tmp_path, 12)
    assert got[5] == ['50 - ']
    assert 'quality' in proc.stderr      # the engine's end report


def test_bins_partition_the_arguments(tmp_path):
    script = write_script(tmp_path, n=10)
    cluf(script, '-p', 1, '-b', '0/3', cwd=tmp_path, check=0)
    assert sorted(calls(tmp_path)) == [0, 3, 6, 9]
    cluf(script, '-p', 1, '-b', '1-2/3', cwd=tmp_path, check=0)
    ran_once(tmp_path, 10)


def test_hash_and_key_bins_partition(tmp_path):
    script = write_script(tmp_path, n=10, code='''
        args = [job_stream.Arguments(i, b=i % 4, c=f'c{i}') for i in range(10)]
    ''')
    for i in range(3):
        cluf(script, '-p', 1, '-b', f'{i}/3', '-x', '0,c', cwd=tmp_path, check=0)
    ran_once(tmp_path, 10)
    (tmp_path / 'out').rename(tmp_path / 'out-hash')
    cluf(script, '-p', 1, '-b', '1/4', '-k', 'b', cwd=tmp_path, check=0)
    assert sorted(calls(tmp_path)) == [1, 5, 9]
    assert calls(tmp_path)[5] == ['1 c5 ']


def test_target_args_rename_and_generators(tmp_path):
    script = write_script(tmp_path, code='''
        def run_one(a, b=0, c='-'):
            target(a, b, c)
        def make():
            for i in range(4):
                yield (i, -i, 'z')
    ''')
    cluf(script, '-t', 'run_one', '-a', 'make', '-p', 2, cwd=tmp_path, check=0)
    got = ran_once(tmp_path, 4)
    assert got[3] == ['-3 z ']


def test_arguments_are_streamed(tmp_path):
    """The generator is not drained before the target runs."""
    script = write_script(tmp_path, code='''
        import itertools
        def args():
            for i in itertools.count():
                if i == 2000:
                    # arguments ran long before the input was read (before
                    # the first result, only a few arguments are read)
                    assert os.listdir(OUT), 'materialized'
                    return
                yield i
    ''')
    cluf(script, '-p', 2, '--no-report', cwd=tmp_path, check=0)
    ran_once(tmp_path, 2000)


def test_missing_target_and_args_name_what_exists(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('def work(x): pass\nitems = [1, 2]\n')
    proc = cluf(bad, cwd=tmp_path, check=2)
    assert "no 'target' to call (it defines work)" in proc.stderr
    proc = cluf(bad, '-t', 'work', cwd=tmp_path, check=2)
    assert "no 'args' of arguments (it defines the iterables items)" in proc.stderr
    cluf(bad, '-t', 'work', '-a', 'items', cwd=tmp_path, check=0)


def test_failing_argument_stops_or_keeps_going(tmp_path):
    script = write_script(tmp_path, n=8, code='''
        _record = target
        def target(a, b=0):
            if a in (2, 6):
                raise ValueError(f'bad {a}')
            _record(a, b)
    ''')
    proc = cluf(script, '-p', 1, cwd=tmp_path, check=1)
    assert 'ValueError: bad 2' in proc.stderr
    assert 'argument #2 (bin 0): (2, 20)' in proc.stderr
    assert 6 not in calls(tmp_path)           # stopped
    (tmp_path / 'out').rename(tmp_path / 'out-1')
    proc = cluf(script, '-p', 2, '--keep-going', cwd=tmp_path, check=1)
    assert sorted(calls(tmp_path)) == [0, 1, 3, 4, 5, 7]
    assert 'cluf: 2 of 8 arguments failed' in proc.stderr
    assert '--- argument #6 (bin 0): (6, 60)' in proc.stderr
    assert 'ValueError: bad 6' in proc.stderr


@pytest.mark.parametrize('args,msg', [
    (['-b', '1/x'], 'expected "x/y"'), (['-b', '4/4'], 'bin 4 is out of range'),
    (['-b', '0/2', '-x', '0,,1'], 'malformed'),
    (['-b', '0/2', '-x', '0', '-k', '1'], 'mutually exclusive'),
    (['-p', 'many'], 'processes must be a positive integer'),
    (['--checkpoint-interval', 'soon'], 'checkpoint_interval must be a number of seconds')])
def test_bad_command_lines(tmp_path, args, msg):
    script = write_script(tmp_path)
    proc = cluf(script, *args, cwd=tmp_path, check=2)
    assert msg in proc.stderr
    assert not calls(tmp_path)


def test_options_from_script_and_rc_file(tmp_path):
    script = write_script(tmp_path, n=6, code='''
        cluf_options = {'bins': '1/2', 'processes': 1}
    ''')
    rc = tmp_path / 'rc.json'
    rc.write_text(json.dumps({'bins': '0/3', 'report': False}))
    proc = cluf(script, cwd=tmp_path, env={'CLUFRC': str(rc)}, check=0)
    assert sorted(calls(tmp_path)) == [1, 3, 5]      # script beats rc
    assert 'quality' not in proc.stderr              # rc applies
    cluf(script, '-b', '0/2', cwd=tmp_path, env={'CLUFRC': str(rc)}, check=0)
    ran_once(tmp_path, 6)                            # command line beats script
    rc.write_text(json.dumps({'jobsdir': 'x'}))
    proc = cluf(script, cwd=tmp_path, env={'CLUFRC': str(rc)}, check=2)
    assert "unknown option 'jobsdir'; valid options are:" in proc.stderr
    assert 'jobs_dir' in proc.stderr
    script.write_text(script.read_text() + 'cluf_options = {"mode": "dispatch"}\n')
    proc = cluf(script, cwd=tmp_path, check=2)
    assert 'only on the command line' in proc.stderr


def test_checkpoint_option(tmp_path):
    script = write_script(tmp_path, n=4)
    ckpt = tmp_path / 'run.chk'
    cluf(script, '-c', ckpt, '-p', 1, cwd=tmp_path, check=0)
    ran_once(tmp_path, 4)
    assert (tmp_path / 'run.chk.done').exists() and not ckpt.exists()


def test_direct_with_jobs_dir_resumes_finished_bins(tmp_path):
    script = write_script(tmp_path, n=6, code='''
        _record = target
        def target(a, b=0):
            if a == 4 and not os.path.exists('fixed'):
                raise ValueError('not yet')
            _record(a, b)
    ''')
    jobs = tmp_path / 'jobs'
    proc = cluf(script, '-b', '0-2/3', '-j', jobs, '--keep-going', '-p', 1,
                cwd=tmp_path, check=1)
    status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
    assert 'done         2  bins 0,2' in status and 'failed       1  bins 1' in status
    assert "1 failing argument(s), first #4 (4, 40): ValueError: not yet" in status
    (tmp_path / 'fixed').write_text('')
    proc = cluf(script, '-b', '0-2/3', '-j', jobs, '-p', 1, cwd=tmp_path, check=0)
    assert 'bins 0,2/3 already done' in proc.stderr
    got = calls(tmp_path)
    # bins 0 and 2 did not run again; bin 1 (arguments 1 and 4) did
    assert {a: len(c) for a, c in got.items()} == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1}
    proc = cluf(script, '-b', '0/2', '-j', jobs, cwd=tmp_path, check=2)
    assert 'holds bins of another run (bins was 3, now 2)' in proc.stderr


# -- dispatch: scripts run by hand ------------------------------------------
def test_slurm_scripts_run_by_hand(tmp_path):
    script = write_script(tmp_path, n=7, code='''
        cluf_options = {'prepend_statements': ['echo before > before.txt'],
                        'slurm_options': {'time': '00:10:00', 'mem': '1G'}}
    ''')
    (tmp_path / 'pre.sh').write_text('export CLUF_TEST_PRE="from script"\n')
    jobs = tmp_path / 'jobs'
    proc = cluf(script, '-n', 3, '-j', jobs, '-p', 1, '--scheduler', 'slurm',
                '-e', 'CLUF_TEST_VALUE="x y \'z\'" OTHER=1',
                '--prepend-script', 'pre.sh', '--append-statements', 'echo after',
                cwd=tmp_path, check=0)
    assert 'wrote 3 slurm scripts' in proc.stderr and 'add --queue' in proc.stderr
    text = (jobs / 'subjob-1.sh').read_text()
    assert '#SBATCH --job-name=target-1-3\n' in text
    assert f'#SBATCH --output={jobs}/target-1-3.stdout\n' in text
    assert '#SBATCH --cpus-per-task=1\n#SBATCH --mem=1G\n#SBATCH --time=00:10:00\n' in text
    assert '--bins 1/3' in text and 'CLUF_TEST_PRE="from script"' in text
    assert text.index('echo before') < text.index('--bins') < text.index('echo after')
    for i in range(3):
        run = subprocess.run(['bash', str(jobs / f'subjob-{i}.sh')], capture_output=True,
                             text=True, timeout=120, env=script_env())
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == 'after'
    got = ran_once(tmp_path, 7)
    assert got[4] == ["40 - x y 'z'"]            # quoting survived
    status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
    assert 'done         3  bins 0-2' in status and 'waiting      0' in status
    proc = cluf(script, '-n', 3, '-j', jobs, '--scheduler', 'slurm', cwd=tmp_path,
                check=0)
    assert '3 of 3 bins are already done' in proc.stderr
    proc = cluf(script, '-n', 3, '-j', jobs, '--queue', '--scheduler', 'slurm',
                cwd=tmp_path, check=0)
    assert 'every bin is done or queued; nothing to submit' in proc.stderr


PBS_GOLDEN = f'''#!/bin/bash
#PBS -N sim-0-2
#PBS -o {{jobs}}/logs/sim-0.out
#PBS -e {{jobs}}/sim-0-2.stderr
#PBS -l nodes=1:ppn=3
#PBS -A proj7
#PBS -l mem=2gb
#PBS -q long
#PBS -l walltime=01:00:00
# Written by cluf; run it with sbatch/qsub, or by hand with bash.
'''


def test_pbs_scripts_golden_and_run_by_hand(tmp_path):
    script = write_script(tmp_path, n=5, code='''
        cluf_options = {'pbs_options': {
            'name': 'sim-{subjob}-{num_subjobs}', 'stdout': 'logs/sim-{subjob}.out',
            'walltime': '01:00:00', 'mem': '2gb', 'queue': 'long',
            'account': 'proj7', 'ppn': 3}}
    ''')
    jobs = tmp_path / 'jobs'
    cluf(script, '-i', 3, '-j', jobs, '--scheduler', 'pbs', '-e', 'CLUF_TEST_VALUE="a b"',
         cwd=tmp_path, check=0)
    assert sorted(p.name for p in jobs.glob('*.sh')) == ['subjob-0.sh', 'subjob-1.sh']
    text = (jobs / 'subjob-0.sh').read_text()
    assert text.startswith(PBS_GOLDEN.format(jobs=jobs)), text
    assert '#SBATCH' not in text
    (jobs / 'logs').mkdir()
    for i in range(2):
        run = subprocess.run(['bash', str(jobs / f'subjob-{i}.sh')], capture_output=True,
                             text=True, timeout=120, env=script_env())
        assert run.returncode == 0, run.stderr
    assert ran_once(tmp_path, 5)[2] == ['20 - a b']


def test_array_packs_bins_under_max_array_size(tmp_path):
    script = write_script(tmp_path, n=11)
    jobs = tmp_path / 'jobs'
    proc = cluf(script, '-n', 5, '--array', '--max-array-size', 2, '-j', jobs, '-p', 1,
                '--scheduler', 'slurm', cwd=tmp_path, check=0)
    assert 'a job array of 2 tasks over 5 bins (3 per task)' in proc.stderr
    text = (jobs / 'array.sh').read_text()
    assert '#SBATCH --array=0-1\n' in text
    assert f'#SBATCH --output={jobs}/target-%a-2.stdout' in text
    assert subprocess.run(['bash', str(jobs / 'array.sh')], capture_output=True,
                          timeout=60, env=script_env()).returncode == 2   # no task id
    for task in range(2):
        run = subprocess.run(['bash', str(jobs / 'array.sh'), str(task)],
                             capture_output=True, text=True, timeout=120,
                             env=script_env())
        assert run.returncode == 0, run.stderr
    ran_once(tmp_path, 11)
    assert 'done         5  bins 0-4' in cluf('status', jobs, cwd=tmp_path).stdout


def test_dispatch_errors(tmp_path):
    script = write_script(tmp_path)
    proc = cluf(script, '-n', 2, '--queue', '--scheduler', 'slurm', '-j', tmp_path / 'j',
                cwd=tmp_path, env={'PATH': str(tmp_path)}, check=2)
    assert 'sbatch not found on PATH' in proc.stderr
    proc = cluf(script, '-n', 2, '--queue', '--scheduler', 'pbs', '-j', tmp_path / 'k',
                cwd=tmp_path, env={'PATH': str(tmp_path)}, check=2)
    assert 'qsub not found on PATH' in proc.stderr
    proc = cluf(script, '-m', 'dispatch', cwd=tmp_path, check=2)
    assert 'give --nodes N, or --iterations K' in proc.stderr
    proc = cluf(script, '-n', 2, '-b', '0/2', cwd=tmp_path, check=2)
    assert 'drop --bins' in proc.stderr
    proc = cluf(script, '-n', 2, '--array', '--scheduler', 'pbs', cwd=tmp_path, check=2)
    assert 'SLURM job array' in proc.stderr
    assert not calls(tmp_path)


def test_sigterm_marks_bins_failed_and_status_shows_it(tmp_path):
    script = write_script(tmp_path, n=4, code='''
        import time
        def target(a, b=0):
            open(os.path.join(OUT, f'started-{a}'), 'w').close()
            time.sleep(60)
    ''')
    jobs = tmp_path / 'jobs'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'job_stream.cluf', script, '-b', '0-1/2', '-j', jobs,
         '-p', '1'], cwd=tmp_path, env=script_env({'CLUFRC': ''}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / 'out').glob('started-*')):
            assert time.monotonic() < deadline and proc.poll() is None, 'never started'
            time.sleep(0.1)
        status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
        assert 'running      2  bins 0-1' in status
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert 'killed by SIGTERM' in err
    status = cluf('status', jobs, cwd=tmp_path, check=0).stdout
    assert 'failed       2  bins 0-1' in status and 'killed by SIGTERM' in status


def test_scheduler_defaults_to_slurm_without_one_installed(tmp_path):
    script = write_script(tmp_path, code='cluf_options = {"nodes": 2}\n')
    env = {'PATH': str(tmp_path)}       # neither sbatch nor qsub
    proc = cluf(script, '-j', 'jobs', cwd=tmp_path, env=env, check=0)
    assert 'wrote 2 slurm scripts' in proc.stderr     # nodes from cluf_options
    assert '#SBATCH --job-name=target-0-2' in (tmp_path / 'jobs/subjob-0.sh').read_text()
    cluf(script, '-m', 'direct', '-p', 1, cwd=tmp_path, env=env, check=0)
    ran_once(tmp_path, 10)                            # --mode beats nodes


def test_processes_default_to_the_cores_a_scheduler_gave():
    assert default_processes({}) is None                    # all local cores
    assert default_processes({'SLURM_CPUS_ON_NODE': '8', 'SLURM_CPUS_PER_TASK': '3'}) == 3
    assert default_processes({'SLURM_CPUS_ON_NODE': '8'}) == 8
    assert default_processes({'PBS_NUM_PPN': '4', 'SLURM_CPUS_PER_TASK': ''}) == 4
