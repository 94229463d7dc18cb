"""The figure of a sweep: each value against each swept parameter.

One panel per (value, parameter): the value's mean against the parameter,
with error bars of the confidence half-width (``*_err``), one line per
combination of the other parameters.  Drawn with matplotlib's Agg canvas
directly, so the user's pyplot backend is left alone.
"""
from __future__ import annotations

import itertools
import numbers

__all__ = ['plot_table']


def _sort_key(value):
    return (0, value, '') if _is_number(value) else (1, 0, str(value))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def plot_table(table, params: list, path: str, confidence: float = 0.95):
    """Write the figure of ``table`` (see :func:`job_stream.baked.sweep`) to
    ``path``; return the matplotlib ``Figure``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = [c for c in table.columns
              if c not in params and c != 'trials'
              and not (c.endswith(('_dev', '_err')) and c[:-4] in table.columns)]
    xs = params or [None]
    rows, cols = max(1, len(values)), len(xs)
    fig = Figure(figsize=(4.2 * cols + 1.5, 3.2 * rows), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for (i, value), (j, x) in itertools.product(enumerate(values), enumerate(xs)):
        ax = axes[i][j]
        others = [p for p in params if p != x]
        groups = list(table.groupby(others, sort=True) if others
                      else [((), table)])
        column = list(table[x]) if x is not None else ['all']
        if all(_is_number(v) for v in column):
            position, ticks = float, None
            span = (max(column) - min(column)) or 1.0
            step = 0.012 * span
        else:   # categories, in a stable order, at 0, 1, 2...
            ticks = sorted(set(column), key=_sort_key)
            index = {c: n for n, c in enumerate(ticks)}
            position, step = index.__getitem__, 0.012 * max(1, len(ticks) - 1)
        for g, (key, group) in enumerate(groups):
            # dodge the lines sideways so equal means do not hide each other
            shift = (g - (len(groups) - 1) / 2) * step
            if x is None:
                order, xv = list(group.index), [shift]
            else:
                order = sorted(group.index,
                               key=lambda k: _sort_key(group.at[k, x]))
                xv = [position(group.at[k, x]) + shift for k in order]
            key = key if isinstance(key, tuple) else (key,)
            label = ', '.join(f'{p}={k}' for p, k in zip(others, key)) or None
            ax.errorbar(xv, [group.at[k, value] for k in order],
                        yerr=[group.at[k, value + '_err'] for k in order],
                        marker='o', capsize=3, label=label)
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), [str(t) for t in ticks])
        ax.set_xlabel(x if x is not None else '')
        ax.set_ylabel(value)
        ax.grid(alpha=0.3)
        if others and len(table) > 1:
            ax.legend(fontsize='small', framealpha=0.6)
    fig.suptitle(f'sweep: mean ± half-width of its {confidence:.0%} '
                 f'confidence interval', fontsize='medium')
    fig.savefig(path, dpi=100)
    return fig
