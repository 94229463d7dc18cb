"""Run records: a JSON line per run, and the table that reads them."""
import json

SCRIPT = '''
import sys
from job_stream.inline import Work
FAIL = 'fail' in sys.argv
with Work(range(4), cache='cache', showProgress=False, report=False,
          **({'record': 'runs.jsonl'} if 'opt' in sys.argv else {})) as w:
    @w.job
    def double(x):
        return 2 * x
    @w.job(cache=False)
    def check(x):
        if FAIL and x == 6:
            raise ValueError('six is bad')
        return x
'''


def test_records_from_option_and_env(run_script, tmp_path):
    run_script(SCRIPT, 'opt', 'alpha')
    run_script(SCRIPT, env={'JOBS_RECORD': str(tmp_path / 'runs.jsonl')})
    failed = run_script(SCRIPT, 'opt', 'fail', check=False)
    assert failed.returncode != 0
    lines = (tmp_path / 'runs.jsonl').read_text().splitlines()
    assert len(lines) == 3
    first, second, third = map(json.loads, lines)
    assert first['status'] == 'ok' and first['error'] is None
    assert first['script'] == str(tmp_path / 'script.py')
    assert first['args'] == ['opt', 'alpha']
    assert first['hosts'] and first['start'] <= first['end']
    assert first['seconds'] > 0
    assert [s['name'] for s in first['stages']] == ['double', 'check']
    assert first['stages'][0]['items'] == 4 and first['stages'][0]['hits'] == 0
    assert first['cache_hits'] == 0
    assert 'checkpoint' in first
    assert second['stages'][0]['hits'] == 4 and second['cache_hits'] == 4
    assert second['args'] == []
    assert third['status'] == 'failed'
    assert 'six is bad' in third['error']

    reader = '''
        import sys
        from job_stream.records import runs
        runs(sys.argv[1:])
    '''
    out = run_script(reader, 'runs.jsonl', '-n', '2', '--stages',
                     name='reader.py').stdout
    table = out.split('\n\n')[0].splitlines()
    assert table[0].split() == ['start', 'seconds', 'status', 'items', 'hits',
                                'script', 'args']
    assert len(table) == 3  # header + the last two runs
    assert table[1].split()[2:5] == ['ok', '8', '4']
    assert table[2].split()[2] == 'failed'
    assert 'double: 4 items, 4 cache hits' in out
    # Through the standalone command, the default path from $JOBS_RECORD.
    out = run_script('''
        import runpy, sys
        sys.argv = ['job_stream.cache', 'runs']
        runpy.run_module('job_stream.cache', run_name='__main__')
    ''', name='m.py', env={'JOBS_RECORD': 'runs.jsonl'}, check=False)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 4


def test_reader_without_file_explains(run_script):
    out = run_script('''
        from job_stream.records import runs
        runs(['nowhere.jsonl'])
    ''', check=False)
    assert out.returncode != 0
    assert 'No run record file' in out.stderr


def test_no_record_without_option_or_env_or_with_record_false(run_script, tmp_path):
    run_script(SCRIPT, env={'JOBS_RECORD': ''})
    assert not list(tmp_path.glob('*.jsonl'))
    run_script('''
        from job_stream.inline import Work
        with Work([1], record=False, report=False, showProgress=False) as w:
            w.job(lambda x: x)
    ''', env={'JOBS_RECORD': 'env.jsonl'})
    assert not list(tmp_path.glob('*.jsonl'))
    run_script('''
        from job_stream.inline import Work
        with Work([1], report=False, showProgress=False) as w:
            w.job(lambda x: x)
    ''', env={'JOBS_RECORD': 'env.jsonl'})
    assert [p.name for p in tmp_path.glob('*.jsonl')] == ['env.jsonl']
