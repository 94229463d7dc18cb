"""job_stream.baked.sweep: rules of the contract, on real (small) sweeps.

Most sweeps run in this process (useMultiprocessing=False) to stay fast; the
ones about workers, randomness across processes and progress run as scripts
with real worker processes.
"""
import pickle
import random

import numpy as np
import pandas as pd
import pytest

import job_stream.inline
from job_stream.baked import sweep, trialRng, trialSeed
from job_stream.baked.trials import AdaptiveTrials, Criterion
from job_stream.objects import Multiple

QUIET = dict(useMultiprocessing=False, report=False, showProgress=False)


def cpus(monkeypatch, n):
    monkeypatch.setattr(job_stream.inline, 'getCpuCount', lambda: n)


def constant_sweep(variables={}, **kwargs):
    with sweep(variables, **kwargs, **QUIET) as w:
        @w.job
        def trial(id, trial, **params):
            return {'v': 1.0}
    return w.table


# -- trial counts ----------------------------------------------------------
@pytest.mark.parametrize('n_cpus,variables,trials,expected', [
    (8, {}, 0, 8),                          # 1 combination on 8 cores
    (8, {}, -3, 3),                         # capped by the maximum
    (8, {}, -10, 8),
    (32, {'a': [1, 2, 3, 4]}, 0, 8),        # 4 combinations on 32 cores
    (2, {}, 0, 3),                          # min wins on a small machine
    (2, {'a': [1, 2]}, 5, 5),               # fixed
    (64, {}, 7, 7),                         # fixed ignores the cores
])
def test_first_batch_trial_counts(monkeypatch, n_cpus, variables, trials,
                                  expected):
    cpus(monkeypatch, n_cpus)
    table = constant_sweep(variables, trials=trials)
    assert list(table['trials']) == [expected] * len(table)
    assert (table['v_err'] == 0).all() and (table['v_dev'] == 0).all()


def test_numpy_integers_are_accepted(monkeypatch):
    cpus(monkeypatch, 2)
    assert list(constant_sweep(trials=np.int64(4))['trials']) == [4]
    table = constant_sweep(trialsParms={'min': np.int32(5), 'E': np.float32(0.2)})
    assert list(table['trials']) == [5]


def test_min_raises_first_batch(monkeypatch):
    cpus(monkeypatch, 2)
    table = constant_sweep(trialsParms={'min': 6})
    assert list(table['trials']) == [6]


def test_noisy_values_get_more_trials_until_criterion(monkeypatch):
    cpus(monkeypatch, 8)
    with sweep({'s': [0.01, 1.0]}, seed=1, trialsParms={'E': 0.05},
               **QUIET) as w:
        @w.job
        def trial(id, trial, s):
            return {'x': random.gauss(10, s)}
    t = w.table
    assert t.loc[0, 'trials'] == 4          # tight already after the pilot
    assert t.loc[1, 'trials'] > 10
    for i in t.index:
        assert t.loc[i, 'x_err'] <= 0.05 * abs(t.loc[i, 'x'])


def test_max_stops_an_impossible_criterion(monkeypatch):
    cpus(monkeypatch, 2)
    with pytest.warns(RuntimeWarning, match=r'combination 0 \{\} stopped at '
                      r'the maximum of 12 trials .*\(x_err=[0-9.]+ > 0\.0[0-9]+\)'):
        with sweep(trials=-12, seed=0, **QUIET) as w:
            @w.job
            def trial(id, trial):
                return {'x': random.gauss(0, 1)}    # mean 0: E never met
    assert list(w.table['trials']) == [12]
    assert w.table.loc[0, 'x_err'] > 1e-2


def test_extra_trials_start_while_others_run():
    """After the pilot, each arriving result may start trials at once: the
    frame never waits for a whole round (no lockstep)."""
    a = AdaptiveTrials(Criterion(E=0.01, eps=0), first=3)
    rng = np.random.default_rng(0)
    inflight = a.begin()
    seen_overlap = False
    for _ in range(20):
        trial = inflight.pop(0)
        new = a.add(trial, {'x': rng.normal(5, 1)})
        if new and inflight:
            seen_overlap = True
        inflight += new
    assert seen_overlap
    assert a.started > 3 and a.done == 20


def test_trial_state_pickles_mid_sweep():
    """The combination frame's store is checkpointed: a pickled copy
    carries on exactly like the original."""
    rng = np.random.default_rng(3)
    draws = rng.normal(2, 1, 10000)
    a = AdaptiveTrials(Criterion(), first=3)
    inflight = a.begin()
    for _ in range(5):
        inflight += a.add(inflight.pop(0), {'x': draws[a.done]})
    b = pickle.loads(pickle.dumps(a))

    def finish(t, inflight):
        while True:
            while inflight:
                inflight += t.add(inflight.pop(0), {'x': draws[t.done]})
            inflight = t.again()
            if not inflight:
                return t.row()
    assert finish(a, list(inflight)) == finish(b, list(inflight))


# -- variables ---------------------------------------------------------------
def test_dict_variables_every_combination_and_table_layout(monkeypatch, capsys):
    cpus(monkeypatch, 2)
    with sweep({'b': [1, 2], 'a': ['x', 'y', 'z']}, trials=2, **QUIET) as w:
        @w.job
        def trial(id, trial, a, b):
            return {'zeta': b * 1.0 + trial, 'alpha': float(len(a))}
    t = w.table
    assert t.index.name == 'id' and list(t.index) == list(range(6))
    assert list(t.columns) == ['trials', 'a', 'b', 'alpha', 'alpha_dev',
                               'alpha_err', 'zeta', 'zeta_dev', 'zeta_err']
    assert sorted(zip(t['a'], t['b'])) == [(a, b) for a in 'xyz' for b in (1, 2)]
    assert list(t['zeta']) == list(t['b'] + 0.5)
    assert t['zeta_dev'].iloc[0] == pytest.approx(np.std([0, 1], ddof=1))
    # 95% t quantile with 1 degree of freedom
    assert t['zeta_err'].iloc[0] == pytest.approx(
        12.706204736 * t['zeta_dev'].iloc[0] / np.sqrt(2))
    out = capsys.readouterr().out
    assert 'alpha_err' in out and out.count('\n') >= 7
    assert out.index('trials') < out.index('alpha') < out.index('zeta')


def test_list_variables_exactly_those(monkeypatch):
    cpus(monkeypatch, 2)
    combos = [{'a': 1, 'b': 5}, {'a': 1, 'b': 6}, {'a': 3, 'b': 5}]
    with sweep(combos, trials=1, **QUIET) as w:
        @w.job
        def trial(id, trial, a, b):
            return {'s': a + b + 10.0 * id}
    assert list(w.table['s']) == [6.0, 17.0, 28.0]
    assert w.table[['a', 'b']].to_dict('records') == combos


def test_list_variables_must_have_same_keys():
    with pytest.raises(ValueError, match=r"must have same keys; found "
                                         r"\{'b'\} against \{'a'\}"):
        sweep([{'a': 1}, {'b': 2}])


@pytest.mark.parametrize('kwargs,message', [
    (dict(variables=3), 'variables must be a dict'),
    (dict(variables={'a': 3}), r"variables\['a'\] must be a list"),
    (dict(variables={'id': [1]}), "'id' cannot be a parameter name"),
    (dict(variables=[]), 'empty list: nothing to sweep'),
    (dict(variables={'a': []}), r"variables\['a'\] is empty"),
    (dict(trials=2.0), 'trials must be an int'),
    (dict(trials=True), 'trials must be an int'),
    (dict(output=5), 'output must be a path'),
    (dict(plot=['x']), 'plot must be a path'),
    (dict(trialsParms={'e': 1}), "Unknown trialsParms key 'e'"),
    (dict(trials=5, trialsParms={'min': 2}), "'min' cannot be used with trials=5"),
    (dict(trials=-5, trialsParms={'max': 9}), "'max' cannot be used with trials=-5"),
    (dict(trials=5, trialsParms={'max': 9}), "'max' cannot be used with trials=5"),
    (dict(trialsParms={'E': 0, 'eps': 0}), "'E' and 'eps' cannot both be 0"),
    (dict(trialsParms={'min': 10, 'max': 5}), r"'min' \(10\) is greater than"),
    (dict(trials=-4, trialsParms={'min': 10}), r"'min' \(10\) is greater than"),
    (dict(confidence=95), 'confidence must be a float between 0 and 1'),
    (dict(seed=-1), 'seed must be a non-negative int'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sweep(**kwargs)


# -- results -----------------------------------------------------------------
@pytest.mark.parametrize('returned,message', [
    (lambda t: [1.0], "must be a single dict"),
    (lambda t: Multiple([{'x': 1.0}, {'x': 2.0}]), r"cannot emit Multiple either"),
    (lambda t: None, r"must be a single dict .*gave 0 results"),
    (lambda t: {'a': 1.0}, "'a' is also a parameter name"),
    (lambda t: {'x': 1.0} if t == 0 else {'y': 1.0}, "must return the same keys"),
    (lambda t: {'x': 'high'}, "'x' must be a number"),
    (lambda t: {'x': float('nan')}, "'x' is nan"),
    (lambda t: {'x': 1.0, 'x_err': 2.0}, "'x' and 'x_err' clash"),
])
def test_bad_results_fail_clearly(returned, message):
    with pytest.raises(ValueError, match=message):
        with sweep({'a': [1]}, trials=3, **QUIET) as w:
            @w.job
            def trial(id, trial, a):
                return returned(trial)


def test_result_and_reduce_are_refused():
    with pytest.raises(ValueError, match='sweep\\(\\) handles the results'):
        with sweep(**QUIET) as w:
            w.result(print)
    with pytest.raises(ValueError, match='sweep\\(\\) reduces the trials'):
        with sweep(**QUIET) as w:
            w.reduce(lambda store, inputs, others: None)
    with pytest.raises(ValueError, match='do not call run'):
        with sweep(**QUIET) as w:
            w.run()


def test_user_frames_inside_a_trial(monkeypatch):
    cpus(monkeypatch, 2)
    with sweep({'n': [3, 5]}, trials=2, **QUIET) as w:
        @w.job
        def start(id, trial, n):
            return n

        @w.frame
        def countdown(store, n):
            if not hasattr(store, 'steps'):
                store.steps = 0
                return n
            return None

        @w.job
        def step(k):
            return k - 1

        @w.frameEnd
        def again(store, k):
            store.steps += 1
            return k if k > 0 else None

        @w.job
        def result(store):
            return {'steps': float(store.steps)}
    assert list(w.table['steps']) == [3.0, 5.0]

    with pytest.raises(ValueError, match="countdown' was never closed"):
        with sweep(**QUIET) as w:
            w.job(start)
            w.frame(countdown)


def test_multi_stage_pipeline_and_csv_plot(tmp_path, monkeypatch):
    cpus(monkeypatch, 2)
    csv, png = tmp_path / 'out.csv', tmp_path / 'fig.png'
    with sweep({'a': [1, 2, 3], 'b': [0, 1]}, trials=-40, seed=2,
               output=str(csv), plot=str(png), **QUIET) as w:
        @w.job
        def draw(id, trial, a, b):
            return (a, b, random.gauss(0, 0.1))

        @w.job
        def measure(work):
            a, b, noise = work
            return {'y': a * (b + 1) + noise}
    back = pd.read_csv(csv).set_index('id')
    pd.testing.assert_frame_equal(back, w.table, check_exact=False)
    assert (abs(w.table['y'] - w.table['a'] * (w.table['b'] + 1)) < 0.3).all()
    data = png.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 20000
    # what is drawn: one panel per (value, parameter), a line per
    # combination of the other parameters, error bars of y_err
    from job_stream.baked.plot import plot_table
    fig = plot_table(w.table, ['a', 'b'], str(tmp_path / 'again.png'))
    axes = fig.get_axes()
    assert [(ax.get_ylabel(), ax.get_xlabel()) for ax in axes] == [
        ('y', 'a'), ('y', 'b')]
    assert [len(ax.containers) for ax in axes] == [2, 3]
    line = axes[0].containers[0]           # b=0, against a
    _, (lower, upper), _ = line.lines[0], line.lines[1], line.lines[2]
    t = w.table[w.table['b'] == 0].sort_values('a')
    assert list(line.lines[0].get_ydata()) == list(t['y'])
    assert list(upper.get_ydata()) == pytest.approx(list(t['y'] + t['y_err']))
    assert [lab.get_text() for lab in axes[0].get_legend().get_texts()] == [
        'b=0', 'b=1']


def test_confidence_widens_interval(monkeypatch):
    cpus(monkeypatch, 2)
    tables = {}
    for c in (0.95, 0.99):
        with sweep(trials=6, seed=11, confidence=c, **QUIET) as w:
            @w.job
            def trial(id, trial):
                return {'x': random.gauss(0, 1)}
        tables[c] = w.table
    assert tables[0.95]['x'].equals(tables[0.99]['x'])
    ratio = tables[0.99].loc[0, 'x_err'] / tables[0.95].loc[0, 'x_err']
    assert ratio == pytest.approx(4.032142984 / 2.570581836)


# -- randomness ------------------------------------------------------------
def seeded_table(seed):
    with sweep({'a': [0, 1]}, trials=4, seed=seed, **QUIET) as w:
        @w.job
        def trial(id, trial, a):
            return {'r': random.random(), 'n': float(np.random.random()),
                    'g': trialRng().random(), 's': trialSeed() / 2.0 ** 64}
    return w.table


def test_seed_makes_sweep_reproducible():
    one, two, other = seeded_table(5), seeded_table(5), seeded_table(6)
    pd.testing.assert_frame_equal(one, two)
    assert not (one['r'] == other['r']).any()


def test_trial_rng_outside_a_trial():
    with pytest.raises(RuntimeError, match='first job of a sweep'):
        trialRng()


WORKER_SCRIPT = '''
import os, sys, random
import numpy as np
from job_stream.baked import sweep, trialRng
out = sys.argv[1]
seed = None if sys.argv[2] == 'none' else int(sys.argv[2])
os.makedirs(out, exist_ok=True)
with sweep({'a': [1, 2, 3]}, trials=8, seed=seed, output=out + '.csv',
           processes=2) as w:
    @w.job
    def trial(id, trial, a):
        draws = (random.random(), float(np.random.random()), trialRng().random())
        with open(f'{out}/{id}-{trial}', 'w') as f:
            f.write(f'{os.getpid()} {draws[0]!r} {draws[1]!r} {draws[2]!r}')
        return {'x': draws[0]}
print('rows', len(w.table))
'''


def read_draws(folder):
    draws = {}
    for f in folder.iterdir():
        pid, *numbers = f.read_text().split()
        draws[f.name] = (int(pid), tuple(numbers))
    return draws


def test_trials_independent_across_workers_and_reproducible(run_script,
                                                           tmp_path):
    for name, seed in (('a', '5'), ('b', '5'), ('c', 'none')):
        proc = run_script(WORKER_SCRIPT, tmp_path / name, seed, timeout=180)
        assert 'rows 3' in proc.stdout
        # plain progress lines, since stderr is not a terminal
        assert 'sweep: combination 2' in proc.stderr
    a, b, c = (read_draws(tmp_path / n) for n in 'abc')
    assert len(a) == len(b) == len(c) == 24
    for draws in (a, c):
        numbers = [x for _, xs in draws.values() for x in xs]
        assert len(set(numbers)) == len(numbers)   # no two draws alike
        assert len({pid for pid, _ in draws.values()}) == 2   # both workers
    # same seed: the same numbers per (id, trial), whichever worker ran it
    assert {k: v[1] for k, v in a.items()} == {k: v[1] for k, v in b.items()}
    assert pd.read_csv(str(tmp_path / 'a') + '.csv').equals(
        pd.read_csv(str(tmp_path / 'b') + '.csv'))


def test_show_progress_false_is_silent(run_script):
    proc = run_script('''
        from job_stream.baked import sweep
        with sweep({'a': [1]}, trials=2, showProgress=False,
                   useMultiprocessing=False, report=False) as w:
            @w.job
            def trial(id, trial, a):
                return {'x': 1.0}
    ''')
    assert 'sweep' not in proc.stderr
    assert 'x_err' in proc.stdout


@pytest.mark.parametrize('order_seed', [1, 2, 3])
def test_automatic_mode_does_not_depend_on_arrival_order(order_seed):
    """Seeded trials + any arrival order: the same trials, the same table."""
    def run(arrival):
        values = np.random.default_rng(42).normal(5, 1.5, 10000)
        a = AdaptiveTrials(Criterion(E=0.05), first=4)
        inflight = a.begin()
        while True:
            while inflight:
                i = 0 if arrival is None else int(arrival.integers(len(inflight)))
                trial = inflight.pop(i)
                inflight += a.add(trial, {'x': values[trial]})
            inflight = a.again()
            if not inflight:
                return a.row()
    fifo = run(None)
    assert fifo['trials'] > 20
    assert run(np.random.default_rng(order_seed)) == fifo


def test_progress_bar_on_a_terminal(tmp_path):
    """stderr on a terminal: a tqdm bar with trials and combinations."""
    import os
    import pty
    import subprocess
    import sys
    from conftest import script_env
    path = tmp_path / 'bar.py'
    path.write_text('''
import time
from job_stream.baked import sweep
with sweep({'a': [1, 2]}, trials=10, useMultiprocessing=False,
           report=False) as w:
    @w.job
    def trial(id, trial, a):
        time.sleep(0.05)
        return {'x': 1.0}
''')
    import fcntl
    import struct
    import termios
    master, slave = pty.openpty()
    # a new pty is 0 columns wide, where tqdm draws nothing: size it
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL,
                            env=script_env(), cwd=tmp_path)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:         # EIO: the script closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    terminal = b''.join(chunks).decode(errors='replace')
    assert 'sweep:' in terminal and '/20' in terminal
    assert 'running 0: ' in terminal          # per combination: done/estimated
    assert 'combinations' in terminal and 'trial/s' in terminal
    assert 'sweep: combination' not in terminal     # no plain lines
    assert b'x_err' in out


def test_job_subclass_first_stage(monkeypatch):
    from job_stream.common import Job
    cpus(monkeypatch, 2)

    class Trial(Job):
        def handleWork(self, work):
            id, trial = work.args
            self.emit((work.kwargs['a'], trial))

    with sweep({'a': [2, 3]}, trials=2, **QUIET) as w:
        w.job(Trial)

        @w.job
        def measure(work):
            a, trial = work
            return {'y': a * 10.0 + trial}
    assert list(w.table['y']) == [20.5, 30.5]


def test_user_exception_stops_the_sweep(run_script):
    proc = run_script('''
        from job_stream.baked import sweep
        with sweep({'a': [1, 2]}, trials=3, report=False) as w:
            @w.job
            def experiment(id, trial, a):
                if a == 2 and trial == 1:
                    raise ZeroDivisionError('bad luck in trial 1')
                return {'x': 1.0}
        print('not reached')
    ''', check=False)
    assert proc.returncode != 0
    assert 'ZeroDivisionError: bad luck in trial 1' in proc.stderr
    assert 'experiment' in proc.stderr
    assert 'not reached' not in proc.stdout


def test_bad_result_names_the_trial_frame():
    with pytest.raises(ValueError) as info:
        with sweep({'a': [1]}, trials=1, **QUIET) as w:
            @w.job
            def trial(id, trial, a):
                return 5.0
    assert 'sweep (frame of one trial)' in '\n'.join(info.value.__notes__)
    assert 'trial 0 of' in str(info.value)
