"""Bad input gets one clear sentence; failures never hang or lose work."""
import re

import pytest

from job_stream.errors import ConfigurationError
from job_stream.inline import Work


@pytest.mark.parametrize('decorator,func,pattern', [
    ('init', lambda x: x, r"init function '.*' must take exactly 0 arguments"),
    ('finish', lambda: 0, r"finish function '.*' must take exactly 1 argument "),
    ('reduce', lambda a, b: 0, r"reduce function '.*' must take exactly 3 arguments"),
    ('job', lambda: 0, r"job function '.*' must take at least 1 argument "),
    ('result', lambda: 0, r"result function '.*' must take at least 1 argument"),
    ('frame', lambda s: 0, r"frame function '.*' must take at least 2 arguments"),
])
def test_argument_counts_are_checked_at_declaration(decorator, func, pattern):
    w = Work([])
    with pytest.raises(TypeError, match=pattern):
        getattr(w, decorator)(func)


def test_varargs_count_as_one():
    w = Work([])
    w.job(lambda *a: a)
    w.frame(lambda s, *rest: None)
    w.frameEnd(lambda *a, **k: None)


def test_frame_end_without_frame():
    with pytest.raises(ConfigurationError, match='has no frame to close'):
        Work([]).frameEnd(lambda s, n: None)


def test_unclosed_frame_is_refused_at_run():
    w = Work([1], report=False)
    w.frame(lambda s, f: None)
    with pytest.raises(ConfigurationError, match='never closed'):
        w.run()


@pytest.mark.parametrize('first,then', [('result', 'job'), ('finish', 'job'),
                                        ('result', 'finish'),
                                        ('finish', 'finish')])
def test_nothing_after_result_or_finish(first, then):
    w = Work([])
    getattr(w, first)(lambda r: r)
    with pytest.raises(ConfigurationError, match=f'Cannot declare {then} after'):
        getattr(w, then)(lambda r: r)


def test_unknown_options_name_the_option_and_the_valid_ones():
    with pytest.raises(TypeError, match=r"Unknown option 'checkpointFiel'.*processes"):
        Work([], checkpointFiel='x')
    with pytest.raises(TypeError, match=r"Unknown job option 'useMultiProcessing'"):
        Work([]).job(useMultiProcessing=False)(lambda x: x)


def test_user_exception_names_stage_and_work_and_exits_nonzero(run_script):
    proc = run_script('''
        from job_stream.inline import Work
        with Work(range(50)) as w:
            @w.job
            def parse(x):
                if x == 37:
                    raise ValueError('cannot parse %d' % x)
                return x
    ''', check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert "raise ValueError('cannot parse %d' % x)" in err
    tb_end = err.index('ValueError: cannot parse 37')
    assert err.index('While processing work with target: parse') > tb_end
    assert re.search(r'work: 37\b', err)


def test_exception_in_reducer_is_named(run_script):
    proc = run_script('''
        from job_stream.inline import Work
        with Work(range(5)) as w:
            @w.reduce
            def add(store, inputs, others):
                raise KeyError('oops')
    ''', check=False)
    assert proc.returncode != 0
    assert 'While processing work with target: add' in proc.stderr


def test_unpicklable_work_names_the_stage_that_produced_it(run_script):
    proc = run_script('''
        import threading
        from job_stream.inline import Work
        with Work(range(3)) as w:
            @w.job
            def make_lock(x):
                return threading.Lock()
    ''', check=False)
    assert proc.returncode != 0
    assert "Work emitted by stage 'make_lock' cannot be pickled" in proc.stderr


def test_unpicklable_initial_work_is_named(run_script):
    proc = run_script('''
        import threading
        from job_stream.inline import Work
        with Work([threading.Lock()]) as w:
            w.job(lambda x: x)
    ''', check=False)
    assert proc.returncode != 0
    assert "Work produced by 'initial work' cannot be pickled" in proc.stderr


def test_killed_worker_work_is_retried_without_loss_or_duplicates(run_script, tmp_path):
    proc = run_script(f'''
        import os, signal
        from job_stream.inline import Work
        marker = {str(tmp_path / 'killed')!r}
        with Work(range(200), report=False) as w:
            @w.job
            def maybe_die(x):
                if x == 77 and not os.path.exists(marker):
                    open(marker, 'w').close()
                    os.kill(os.getpid(), signal.SIGKILL)
                return x
            @w.finish
            def check(results):
                print(sorted(results) == list(range(200)), len(results))
    ''')
    assert proc.stdout.split() == ['True', '200']
    assert (tmp_path / 'killed').exists()


def test_work_that_always_kills_its_worker_fails_clearly(run_script):
    proc = run_script('''
        import os, signal
        from job_stream.inline import Work
        with Work(range(10), maxAttempts=2) as w:
            @w.job
            def die(x):
                if x == 4:
                    os.kill(os.getpid(), signal.SIGKILL)
                return x
    ''', check=False, timeout=60)
    assert proc.returncode != 0
    assert re.search(r"Work 4 for stage 'die' was tried 2 times and each time "
                     r"the worker process \(pid \d+\) was killed by signal "
                     r"SIGKILL", proc.stderr)


def test_job_timeout_is_treated_like_a_lost_worker(run_script):
    proc = run_script('''
        import time
        from job_stream.inline import Work
        w = Work([0.01, 30, 0.02], report=False)
        w.job(timeout=1)(lambda t: time.sleep(t) or t)
        w.run()
    ''', check=False, timeout=60)
    assert proc.returncode != 0
    assert "Work 30 for stage '<lambda>' was tried 3 times" in proc.stderr
    assert 'overran its timeout' in proc.stderr
