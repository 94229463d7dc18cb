"""job_stream.invoke: real programs, real failures."""
import os
import sys

import pytest

import job_stream
from job_stream import invoke


def program(path, body, mode=0o755):
    path.write_text(f'#!{sys.executable}\n{body}')
    path.chmod(mode)
    return path


def test_exported_and_returns_text(tmp_path, monkeypatch):
    assert job_stream.invoke is invoke
    monkeypatch.chdir(tmp_path)
    program(tmp_path / 'hello', 'import sys\nprint("out", sys.argv[1:])\n'
            'print("err", file=sys.stderr)\n')
    out, err = invoke(['hello', 'a b', 3])
    assert out == "out ['a b', '3']\n"
    assert err == 'err\n'
    # Relative paths are resolved against the working directory.
    os.mkdir(tmp_path / 'bin')
    program(tmp_path / 'bin' / 'p', 'print("in bin")\n')
    assert invoke(['bin/p'])[0] == 'in bin\n'
    assert invoke(['./bin/p'])[0] == 'in bin\n'
    # Bare names not in the working directory are found on PATH.
    assert invoke(['echo', 'x'])[0] == 'x\n'


def test_missing_program(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match='Program not found'):
        invoke(['./no-such-program'])
    with pytest.raises(RuntimeError, match='Program not found'):
        invoke(['no-such-program-anywhere-xyz'])


def test_not_executable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    program(tmp_path / 'plain', 'print(1)\n', mode=0o644)
    with pytest.raises(RuntimeError, match='Program specified not executable'):
        invoke(['./plain'])
    with pytest.raises(RuntimeError, match='Program specified not executable'):
        invoke([str(tmp_path)])


def test_nonzero_exit_raises_with_code_and_stderr(tmp_path):
    p = program(tmp_path / 'fail', 'import sys\nprint("bad input line 3", '
                'file=sys.stderr)\nsys.exit(7)\n')
    with pytest.raises(RuntimeError) as e:
        invoke([str(p)], transientErrors=['busy'])
    assert 'status 7' in str(e.value)
    assert 'bad input line 3' in str(e.value)
    assert 'attempts' not in str(e.value)  # not transient: no retry


FLAKY = '''
import os, sys
count = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'count')
n = int(open(count).read()) if os.path.exists(count) else 0
open(count, 'w').write(str(n + 1))
if n < int(sys.argv[1]):
    print("Resource busy, try later", file=sys.stderr)
    sys.exit(3)
print("ok after", n)
'''


def test_transient_errors_are_retried(tmp_path):
    p = program(tmp_path / 'flaky', FLAKY)
    out, _ = invoke([str(p), '3'], transientErrors=['Resource busy'])
    assert out == 'ok after 3\n'
    assert (tmp_path / 'count').read_text() == '4'
    # Without the transient marker: fails at once.
    (tmp_path / 'count').unlink()
    with pytest.raises(RuntimeError, match='status 3'):
        invoke([str(p), '3'])
    assert (tmp_path / 'count').read_text() == '1'
    # Retries are bounded by maxRetries.
    (tmp_path / 'count').unlink()
    with pytest.raises(RuntimeError, match=r'after 3 attempts'):
        invoke([str(p), '5'], transientErrors=['Resource busy'], maxRetries=2)
    assert (tmp_path / 'count').read_text() == '3'


def test_no_child_processes_is_always_transient(tmp_path):
    p = program(tmp_path / 'flaky', FLAKY.replace('Resource busy', 'No child processes'))
    assert invoke([str(p), '1'])[0] == 'ok after 1\n'


def test_large_outputs_do_not_deadlock(tmp_path):
    p = program(tmp_path / 'big', 'import sys\n'
                'for i in range(20):\n'
                '    sys.stdout.write("o" * 100000)\n'
                '    sys.stderr.write("e" * 100000)\n')
    out, err = invoke([str(p)])
    assert len(out) == 2_000_000 and set(out) == {'o'}
    assert len(err) == 2_000_000 and set(err) == {'e'}


def test_inside_a_pipeline(run_script, tmp_path):
    program(tmp_path / 'sq', 'import sys\nprint(int(sys.argv[1]) ** 2)\n')
    out = run_script('''
        import job_stream
        from job_stream.inline import Work
        with Work([1, 2, 3], report=False, showProgress=False) as w:
            @w.job
            def run(x):
                return int(job_stream.invoke(['./sq', str(x)])[0])
            @w.finish
            def done(r):
                print(sorted(r))
    ''')
    assert out.stdout.strip() == '[1, 4, 9]'


def test_bad_arguments():
    with pytest.raises(TypeError, match='takes a list'):
        invoke('echo hi')
    with pytest.raises(ValueError):
        invoke([])
