"""Memoized stages, end to end: real scripts run twice, edited, run again.

Every stage appends a line to ``calls.log`` when it is really called, so
"the function was not called" is checked by its side effects.
"""
import json
import os
import pathlib

PIPELINE = '''
import os, sys
from job_stream.inline import Work, Multiple
import helpers

OFFSET = 1

def log(stage, x):
    with open('calls.log', 'a') as f:
        f.write(f'{stage} {x}\\n')

with Work(range(6), cache='cache', processes=2, showProgress=False) as w:
    @w.job
    def stage1(x):
        log('stage1', x)
        return x * 10

    @w.job
    def stage2(x):
        log('stage2', x)
        return x + OFFSET

    @w.job
    def stage3(x):
        log('stage3', x)
        return helpers.scale(x)

    @w.finish
    def done(results):
        print(sorted(results))
'''

HELPERS = '''
FACTOR = 2

def _inner(x):
    return x * FACTOR

def scale(x):
    return _inner(x)
'''


def calls(tmp_path):
    """{stage: number of calls} since the last reset; resets the log."""
    log = tmp_path / 'calls.log'
    out = {}
    if log.exists():
        for line in log.read_text().split('\n'):
            if line:
                stage = line.split()[0]
                out[stage] = out.get(stage, 0) + 1
        log.unlink()
    return out


def setup(tmp_path, code=PIPELINE, helpers=HELPERS):
    (tmp_path / 'helpers.py').write_text(helpers)
    return code


def test_second_run_calls_nothing_and_edit_invalidates_one_stage(run_script, tmp_path):
    code = setup(tmp_path)
    first = run_script(code)
    assert first.stdout.strip() == str([2 * (10 * x + 1) for x in range(6)])
    assert calls(tmp_path) == {'stage1': 6, 'stage2': 6, 'stage3': 6}
    assert 'stage stage1: 6 items, 0 cache hits' in first.stderr

    second = run_script(code)
    assert second.stdout == first.stdout
    assert calls(tmp_path) == {}
    for stage in ('stage1', 'stage2', 'stage3'):
        assert f'stage {stage}: 6 items, 6 cache hits' in second.stderr

    # Edit stage 2's code: stage 1 hits, stage 2 recomputes, stage 3 sees
    # new inputs and recomputes.
    edited = code.replace('return x + OFFSET', 'return x + OFFSET + 1')
    assert edited != code
    third = run_script(edited)
    assert third.stdout.strip() == str([2 * (10 * x + 2) for x in range(6)])
    assert calls(tmp_path) == {'stage2': 6, 'stage3': 6}
    assert 'stage stage1: 6 items, 6 cache hits' in third.stderr

    # Back to the original code: every old entry is still there.
    run_script(code)
    assert calls(tmp_path) == {}


def test_comments_blank_lines_docstrings_and_moves_keep_the_cache(run_script, tmp_path):
    code = setup(tmp_path)
    run_script(code)
    assert calls(tmp_path) == {'stage1': 6, 'stage2': 6, 'stage3': 6}
    cosmetic = code.replace(
        "    @w.job\n    def stage2(x):\n",
        "\n\n    # a new comment\n    @w.job\n    def stage2(x):  # and another\n"
        "        '''Now documented.'''\n\n")
    cosmetic = cosmetic.replace('OFFSET = 1\n', '\n\n# moved down\nOFFSET = 1  # one\n')
    assert cosmetic.count('\n') > code.count('\n') + 4
    (tmp_path / 'helpers.py').write_text(
        '"""Helpers."""\n\n\n' + HELPERS.replace('def _inner', '# inner\ndef _inner'))
    out = run_script(cosmetic)
    assert out.stdout.strip() == str([2 * (10 * x + 1) for x in range(6)])
    assert calls(tmp_path) == {}


def test_helper_and_constant_edits_invalidate(run_script, tmp_path):
    code = setup(tmp_path)
    run_script(code)
    calls(tmp_path)
    # A constant read by a helper of a helper, in another module.
    (tmp_path / 'helpers.py').write_text(HELPERS.replace('FACTOR = 2', 'FACTOR = 3'))
    out = run_script(code)
    assert out.stdout.strip() == str([3 * (10 * x + 1) for x in range(6)])
    assert calls(tmp_path) == {'stage3': 6}
    # The code of a helper of a helper.
    (tmp_path / 'helpers.py').write_text(
        HELPERS.replace('FACTOR = 2', 'FACTOR = 3').replace(
            'return x * FACTOR', 'return x * FACTOR - 1'))
    out = run_script(code)
    assert out.stdout.strip() == str([3 * (10 * x + 1) - 1 for x in range(6)])
    assert calls(tmp_path) == {'stage3': 6}
    # A global constant of the script read by stage 2.
    out = run_script(code.replace('OFFSET = 1', 'OFFSET = 5'))
    assert calls(tmp_path) == {'stage2': 6, 'stage3': 6}


DEPENDS = '''
import pathlib
from job_stream.inline import Work

class Model:
    def __init__(self, k):
        self.k = k
    def predict(self, x):
        return x * self.k

def make():
    return Model(2)

def log(x):
    with open('calls.log', 'a') as f:
        f.write(f'job {x}\\n')

with Work([1, 2, 3], cache='cache', showProgress=False, report=False,
          useMultiprocessing=False) as w:
    @w.job(depends=[pathlib.Path('data.txt'), Model.predict])
    def job(x):
        log(x)
        m = make()                      # an instance made at run time
        extra = int(open('data.txt').read())
        return m.predict(x) + extra

    @w.finish
    def done(results):
        print(sorted(results))
'''


def test_depends_covers_files_and_methods_of_instances(run_script, tmp_path):
    (tmp_path / 'data.txt').write_text('100')
    assert run_script(DEPENDS).stdout.strip() == '[102, 104, 106]'
    assert calls(tmp_path) == {'job': 3}
    run_script(DEPENDS)
    assert calls(tmp_path) == {}
    (tmp_path / 'data.txt').write_text('200')
    assert run_script(DEPENDS).stdout.strip() == '[202, 204, 206]'
    assert calls(tmp_path) == {'job': 3}
    # A method only reached through an instance, named in depends=.
    out = run_script(DEPENDS.replace('return x * self.k', 'return x * self.k * 10'))
    assert out.stdout.strip() == '[220, 240, 260]'
    assert calls(tmp_path) == {'job': 3}


def test_depends_without_cache_is_refused(run_script):
    out = run_script('''
        from job_stream.inline import Work
        w = Work([1])
        w.job(lambda x: x, depends=['a'])
    ''', check=False)
    assert out.returncode != 0
    assert 'depends= is given for job' in out.stderr


NUMPY = '''
import sys
import numpy as np
from job_stream.inline import Work

def log(x):
    with open('calls.log', 'a') as f:
        f.write(f'norm {x.dtype}\\n')

arrays = [np.arange(1000, dtype=np.float64) * i for i in range(4)]
arrays.append(np.arange(1000, dtype=np.float32))
if len(sys.argv) > 1:
    arrays[2][500] = -1.0   # one element of one array changed

with Work(arrays, cache='cache', processes=2, showProgress=False, report=False) as w:
    @w.job
    def norm(a):
        log(a)
        return float(np.abs(a).sum())

    @w.finish
    def done(r):
        print(sorted(r))
'''


def test_numpy_inputs(run_script, tmp_path):
    first = run_script(NUMPY)
    assert calls(tmp_path) == {'norm': 5}
    assert run_script(NUMPY).stdout == first.stdout
    assert calls(tmp_path) == {}
    changed = run_script(NUMPY, 'edit')
    assert changed.stdout != first.stdout
    assert calls(tmp_path) == {'norm': 1}


CONCURRENT = '''
import os, sys, time
from job_stream.inline import Work

def log(x):
    with open('calls.log', 'a') as f:
        f.write(f'slow {x}\\n')

with Work(range(40), cache='cache', processes=2, showProgress=False,
          report=False) as w:
    @w.job
    def slow(x):
        log(x)
        time.sleep(0.01)
        return [x] * 200

    @w.finish
    def done(r):
        print(sum(sum(v) for v in r))
'''


def test_concurrent_writers_share_one_cache(run_script, tmp_path):
    import subprocess
    import sys
    from conftest import script_env
    (tmp_path / 'script.py').write_text(CONCURRENT)
    procs = [subprocess.Popen([sys.executable, 'script.py'], cwd=tmp_path,
                              env=script_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    expected = str(200 * sum(range(40)))
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == expected
        assert 'CacheWarning' not in err and 'corrupt' not in err
    n = calls(tmp_path)['slow']
    assert 40 <= n <= 120
    assert not list(tmp_path.rglob('*.tmp'))
    out = run_script(CONCURRENT)
    assert out.stdout.strip() == expected
    assert calls(tmp_path) == {}
    assert 'CacheWarning' not in out.stderr


def test_corrupt_entry_is_a_miss_with_a_warning_and_is_rewritten(run_script, tmp_path):
    code = setup(tmp_path)
    first = run_script(code)
    calls(tmp_path)
    entries = sorted(p for p in (tmp_path / 'cache' / 'stage1').rglob('*')
                     if p.is_file() and p.name != 'manifest.json')
    assert len(entries) == 6
    data = entries[0].read_bytes()
    entries[1].write_bytes(data[:len(data) // 2])          # truncated
    entries[2].write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # bit flipped
    out = run_script(code)
    assert out.stdout == first.stdout
    assert out.stderr.count('is corrupt') == 2
    assert calls(tmp_path) == {'stage1': 2}
    assert 'stage stage1: 6 items, 4 cache hits' in out.stderr
    again = run_script(code)
    assert 'corrupt' not in again.stderr
    assert calls(tmp_path) == {}


JOB_CLASS = '''
import sys
from job_stream import common

class Split(common.Job):
    USE_MULTIPROCESSING = False   # the in-process executor's path

    def handleWork(self, work):
        with open('calls.log', 'a') as f:
            f.write(f'split {work}\\n')
        self.emit(work * self.config['k'])
        self.emit(-work)

common.work = [1, 2]
common.run({'jobs': [{'type': Split, 'k': int(sys.argv[1])}]}, cache='cache',
           report=False, showProgress=False)
'''


def test_job_class_emits_are_cached_and_keyed_by_config(run_script, tmp_path):
    first = run_script(JOB_CLASS, 1)
    assert sorted(first.stdout.split()) == ['-1', '-2', '1', '2']
    assert calls(tmp_path) == {'split': 2}
    second = run_script(JOB_CLASS, 1)
    assert sorted(second.stdout.split()) == ['-1', '-2', '1', '2']
    assert calls(tmp_path) == {}
    third = run_script(JOB_CLASS, 5)
    assert sorted(third.stdout.split()) == ['-1', '-2', '10', '5']
    assert calls(tmp_path) == {'split': 2}


def test_cache_false_and_per_job_folder(run_script, tmp_path):
    code = '''
        from job_stream.inline import Work
        def log(s):
            with open('calls.log', 'a') as f:
                f.write(s + '\\n')
        with Work([1, 2], showProgress=False, report=False,
                  useMultiprocessing=False) as w:
            @w.job(cache='mine')
            def a(x):
                log('a')
                return x
            @w.job
            def b(x):
                log('b')
                return None if x == 1 else x
    '''
    run_script(code)
    run_script(code)
    assert calls(tmp_path) == {'a': 2, 'b': 4}
    assert sorted(os.listdir(tmp_path / 'mine')) == ['a']


def test_cli_show_explain_clear(run_script, tmp_path):
    code = setup(tmp_path)
    run_script(code)
    calls(tmp_path)
    cli = '''
        import sys
        from job_stream.cache.cli import main
        main(sys.argv[1:])
    '''
    show = run_script(cli, 'show', 'cache', name='cli.py').stdout
    lines = {l.split()[0]: l.split() for l in show.splitlines()}
    assert lines['stage1'][1] == '6' and lines['stage3'][1] == '6'

    (tmp_path / 'helpers.py').write_text(HELPERS.replace('FACTOR = 2', 'FACTOR = 7'))
    run_script(code)
    calls(tmp_path)
    explain = run_script(cli, 'explain', 'cache', 'stage3', name='cli.py').stdout
    assert 'code     helpers._inner' in explain
    assert 'code     helpers.scale' in explain
    assert 'python   version' in explain
    assert '+ value helpers.FACTOR' in explain
    assert 'stage1' not in explain

    # stage3 has two code keys now (FACTOR 2 and 7); keep the latest only.
    assert len(os.listdir(tmp_path / 'cache' / 'stage3')) == 2
    out = run_script(cli, 'clear', 'cache', '--old-keys', name='cli.py').stdout
    assert 'deleted 1 old code key' in out
    assert len(os.listdir(tmp_path / 'cache' / 'stage3')) == 1
    run_script(code)
    assert calls(tmp_path) == {}

    run_script(cli, 'clear', 'cache', 'stage2', name='cli.py')
    assert sorted(os.listdir(tmp_path / 'cache')) == ['stage1', 'stage3']
    run_script(code)
    # stage2 recomputes; its outputs are unchanged, so stage3 still hits.
    assert calls(tmp_path) == {'stage2': 6}
    bad = run_script(cli, 'clear', 'cache', 'nope', name='cli.py', check=False)
    assert bad.returncode != 0 and "No stage 'nope'" in bad.stderr
    run_script(cli, 'clear', 'cache', name='cli.py')
    assert os.listdir(tmp_path / 'cache') == []


def test_library_code_is_keyed_by_version(run_script):
    out = run_script('''
        import numpy as np
        import json
        from job_stream.cache import fingerprint
        def job(x):
            return np.sum(x) + len(json.dumps(x))
        key, components = fingerprint(job)
        for c in components:
            print(*c)
    ''').stdout
    import numpy
    assert f'library numpy numpy {numpy.__version__}' in out
    assert 'json' not in out  # the standard library: covered by the Python version
    assert 'python version' in out
