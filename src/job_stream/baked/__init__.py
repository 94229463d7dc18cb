"""Ready-made pipelines.  :func:`sweep` runs a stochastic experiment over a
grid of parameters, repeating each combination until its means are tight
enough; see docs/sweep.md.

    from job_stream.baked import sweep

    with sweep({'a': [1, 2]}, output='out.csv') as w:
        @w.job
        def trial(id, trial, a):
            return {'y': a * 2.0}
    print(w.table)
"""
from ._sweep import sweep, trialRng, trialSeed

__all__ = ['sweep', 'trialRng', 'trialSeed']
