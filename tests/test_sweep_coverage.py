"""Statistical proof of sweep's stopping rule.

Thousands of automatic sweeps are simulated by driving
:class:`job_stream.baked.trials.AdaptiveTrials` - the object sweep's
combination frame drives - the way the frame does: the first batch is
started, results come back in a random order (workers finish at random
times), extra trials are started as results arrive and ``again()`` is asked
whenever nothing is in flight.  Real end-to-end sweeps are in test_sweep.py.
"""
import math

import numpy as np
import pytest

from job_stream.baked.trials import AdaptiveTrials, Criterion, t_quantile

MU = 3.0
SWEEPS = 1000   # fewer makes a 93% threshold flaky (binomial sd ~0.7%)


def simulate(trials, sigma, rng):
    """Run one combination to the end; return the AdaptiveTrials."""
    inflight = trials.begin()
    while True:
        while inflight:
            trial = inflight.pop(int(rng.integers(len(inflight))))
            inflight += trials.add(trial, {'x': rng.normal(MU, sigma),
                                           'c': 1.0})
        inflight = trials.again()
        if not inflight:
            return trials


def coverage(cls, cv, first, seed, sweeps=SWEEPS, E=0.1, eps=1e-2):
    rng = np.random.default_rng(seed)
    covered, counts, met = 0, [], 0
    crit = Criterion(E=E, eps=eps, min=3, max=10000)
    for _ in range(sweeps):
        t = simulate(cls(crit, first), cv * MU, rng)
        row = t.row()
        covered += abs(row['x'] - MU) <= row['x_err']
        counts.append(row['trials'])
        # the stopping criterion holds for every value when it stopped
        met += all(row[k + '_err'] <= max(E * abs(row[k]), eps)
                   for k in ('x', 'c'))
        assert row['c_err'] == 0 and row['c'] == 1.0
    return covered / sweeps, met, float(np.mean(counts))


@pytest.mark.parametrize('cv,first', [(0.05, 3), (0.2, 3), (0.5, 3),
                                      (0.2, 8)])
def test_interval_covers_mean(cv, first):
    cov, met, mean_trials = coverage(AdaptiveTrials, cv, first,
                                     seed=int(cv * 1000) + first)
    print(f'sigma/mu={cv} pilot={first}: coverage {cov:.3f}, '
          f'mean trials {mean_trials:.1f}')
    assert met == SWEEPS
    assert cov >= 0.93, (cov, mean_trials)


class NaiveTrials(AdaptiveTrials):
    """The original's kind of rule: stop as soon as t * population deviation
    / sqrt(n) is small enough (no correction for optional stopping)."""

    def spread(self, key):
        m = self.moments[key]
        population_dev = m.dev * math.sqrt((m.n - 1) / m.n)
        return t_quantile(m.n - 1, self.criterion.confidence) * population_dev


def test_uncorrected_rule_undercovers():
    """The coverage test has the power to catch optional-stopping bias:
    the uncorrected rule falls clearly short of 93%."""
    cov, met, mean_trials = coverage(NaiveTrials, 0.2, 3, seed=7)
    print(f'uncorrected rule, sigma/mu=0.2: coverage {cov:.3f}, '
          f'mean trials {mean_trials:.1f}')
    assert met == SWEEPS
    assert cov < 0.915, cov


def test_fixed_trials_interval_is_plain_t():
    crit = Criterion(min=10, max=10, fixed=10)
    t = AdaptiveTrials(crit, first=10)
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, 10)
    assert t.begin() == list(range(10))
    for i, x in enumerate(data):
        assert t.add(i, {'x': x}) == []
    assert t.again() == [] and t.finished
    row = t.row()
    assert row['trials'] == 10
    assert row['x'] == pytest.approx(data.mean())
    assert row['x_dev'] == pytest.approx(data.std(ddof=1))
    assert row['x_err'] == pytest.approx(2.2621571627 * data.std(ddof=1)
                                         / math.sqrt(10))


def test_confidence_changes_quantile():
    assert t_quantile(9, 0.95) == pytest.approx(2.2621571627)
    assert t_quantile(9, 0.99) == pytest.approx(3.2498355416)
    assert t_quantile(100000, 0.95) == pytest.approx(1.96, abs=1e-3)


def test_real_sweep_is_the_simulated_rule_and_covers(monkeypatch):
    """End to end: 200 combinations of one real sweep are 200 independent
    automatic sweeps.  Each row equals what driving AdaptiveTrials with the
    same seeded draws gives (so the simulations above test the sweep's own
    code path), and the intervals cover the mean."""
    import job_stream.inline
    from job_stream.baked import sweep, trialRng
    combos, sigma, seed = 200, 0.2 * MU, 12
    # a first batch of 8 per combination, as on a 1600-core allocation
    monkeypatch.setattr(job_stream.inline, 'getCpuCount', lambda: 8 * combos)
    with sweep({'rep': list(range(combos))}, seed=seed, useMultiprocessing=False,
               report=False, showProgress=False) as w:
        @w.job
        def trial(id, trial, rep):
            return {'x': trialRng().normal(MU, sigma), 'c': 1.0}
    table = w.table
    assert len(table) == combos
    for i in table.index:
        a = AdaptiveTrials(Criterion(), first=8)
        inflight = a.begin()
        while inflight:
            while inflight:
                t = inflight.pop()
                rng = np.random.Generator(np.random.PCG64(
                    np.random.SeedSequence(seed, spawn_key=(int(i), t))))
                inflight += a.add(t, {'x': rng.normal(MU, sigma), 'c': 1.0})
            inflight = a.again()
        row = a.row()
        assert table.loc[i, 'trials'] == row['trials']
        for k in ('x', 'x_dev', 'x_err', 'c', 'c_err'):
            assert table.loc[i, k] == row[k], (i, k)
    assert (table['x_err'] <= 0.1 * table['x'].abs()).all()
    cov = float(((table['x'] - MU).abs() <= table['x_err']).mean())
    print(f'real sweeps, sigma/mu=0.2, pilot 8: coverage {cov:.3f}, '
          f'mean trials {table["trials"].mean():.1f}')
    assert cov >= 0.88   # 200 sweeps: 0.88 is 4.5 standard errors below 0.95
