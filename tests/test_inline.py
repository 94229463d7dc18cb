"""The inline API's contract, run in-process (the worker pool is real)."""
import os
import random

import pytest

import job_stream
from job_stream.inline import Args, Multiple, Object, Work


def run(work, build, **options):
    options.setdefault('report', False)
    w = Work(work, **options)
    build(w)
    return w.run()


def test_job_results_are_all_returned():
    out = run(range(100), lambda w: w.job(lambda x: x * 2))
    assert sorted(out) == [2 * x for x in range(100)]


def test_none_skips_and_multiple_expands_generators():
    def build(w):
        @w.job
        def spread(x):
            if x % 3 == 0:
                return None
            return Multiple(y for y in (x, None, -x))
    out = run(range(10), build)
    assert sorted(out) == sorted([x for x in range(10) if x % 3]
                                 + [-x for x in range(10) if x % 3])


def test_args_unpack_into_jobs_and_results():
    seen = []
    with Work([Args(1, 2, c=3), Args(4, 5)], report=False) as w:
        @w.job
        def add(a, b, c=0):
            return Args(a + b, c)

        @w.result
        def got(total, c):
            seen.append((total, c))
    assert sorted(seen) == [(3, 3), (9, 0)]


def test_top_level_reduce_reduces_all_work_then_more_stages():
    def build(w):
        @w.job
        def square(x):
            return x * x

        @w.reduce(store=lambda: Object(total=0), emit=lambda s: s.total)
        def total(store, inputs, others):
            store.total += sum(inputs)

        w.job(lambda t: t + 1)
    assert run(range(10), build) == [286]


def test_reduce_return_value_recurs_within_the_reduction():
    def build(w):
        @w.reduce(store=lambda: Object(seen=[]), emit=lambda s: sorted(s.seen))
        def collect(store, inputs, others):
            store.seen.extend(inputs)
            return Multiple(x // 2 for x in inputs if x >= 2)
    # 8 -> 4 -> 2 -> 1 ; 3 -> 1
    assert run([8, 3], build) == [[1, 1, 2, 3, 4, 8]]


def test_frame_loops_per_item_and_frames_nest():
    def build(w):
        @w.frame(store=lambda: Object(total=0, n=0))
        def outer(store, first):
            if store.n < first:
                store.n += 1
                return store.n

        @w.frame(store=lambda: Object(total=0, n=0))
        def inner(store, first):
            if store.n < first:
                store.n += 1
                return store.n

        w.job(lambda x: x)

        @w.frameEnd
        def inner_end(store, nxt):
            store.total += nxt

        w.job(lambda s: s.total)

        @w.frameEnd
        def outer_end(store, nxt):
            store.total += nxt

        w.job(lambda s: s.total)
    # outer(n) = sum_{k=1..n} k(k+1)/2
    expect = {n: sum(k * (k + 1) // 2 for k in range(1, n + 1)) for n in (1, 3, 5)}
    assert sorted(run([1, 3, 5], build)) == sorted(expect.values())


def test_frame_with_args_unpacks_into_both_functions():
    def build(w):
        @w.frame(emit=lambda s: (s.name, s.total))
        def start(store, name, count):
            if not hasattr(store, 'total'):
                store.name, store.total = name, 0
                return Multiple(range(count))

        @w.frameEnd
        def end(store, value):
            store.total += value
    assert sorted(run([Args('a', 4), Args('b', 3)], build)) == [('a', 6), ('b', 3)]


def test_init_adds_work_and_finish_returns_value():
    calls = []
    with Work([1], report=False) as w:
        @w.init
        def more():
            calls.append(1)
            return Multiple([10, 100])

        @w.finish
        def total(results):
            return sum(results)
    assert w.run() == 111 and calls == [1, 1]


def test_generator_input_is_read_lazily():
    """Input is read a few batches ahead of the results, never all at once."""
    import time
    read = []

    def gen():
        for i in range(3000):
            read.append(i)
            yield i

    lead = []
    with Work(gen(), report=False) as w:
        @w.job
        def work(x):
            time.sleep(0.0003)  # the job's own work: ~0.3 ms per item
            return x

        @w.result
        def check(r):
            lead.append(len(read) - r)
    assert len(read) == 3000
    assert max(lead) < 1000, max(lead)


def test_map_matches_builtin_map_in_order():
    xs, ys = list(range(1000)), list(range(1000, 2000))
    assert job_stream.map(lambda a, b: a * b, xs, ys, report=False) == \
        list(map(lambda a, b: a * b, xs, ys))
    assert job_stream.map(lambda a: None, [1, 2], report=False) == [None, None]


def test_use_multiprocessing_false_runs_in_this_process():
    pids = run(range(20), lambda w: w.job(lambda x: os.getpid()),
               useMultiprocessing=False)
    assert set(pids) == {os.getpid()}
    pids = run(range(20), lambda w: w.job(lambda x: os.getpid()))
    assert os.getpid() not in pids


def test_per_job_override_of_multiprocessing():
    def build(w):
        w.job(lambda x: (x, os.getpid()))
        w.job(useMultiprocessing=False)(lambda t: (t[1], os.getpid()))
    out = run(range(10), build)
    assert all(worker != os.getpid() and here == os.getpid()
               for worker, here in out)


def test_closures_and_lambdas_travel_by_value():
    offset = random.randint(1, 1000)
    table = {i: i * offset for i in range(5)}
    assert sorted(run(range(5), lambda w: w.job(lambda x: table[x] + offset))) \
        == sorted(i * offset + offset for i in range(5))


def test_object_repr_and_cpu_count():
    assert repr(Object(a=1, b='x')) == "Object(a=1, b='x')"
    assert job_stream.getCpuCount() >= 1 and job_stream.getRank() == 0
    assert job_stream.getHostCpuCount() == len(os.sched_getaffinity(0))


def test_empty_input_with_reducer_emits_empty_store():
    def build(w):
        @w.reduce(store=lambda: Object(n=0), emit=lambda s: s.n)
        def count(store, inputs, others):
            store.n += len(inputs)
    assert run([], build) == [0]


def test_job_subclass_in_inline_api():
    from job_stream.common import Job

    class Triple(Job):
        def postSetup(self):
            self.factor = 3

        def handleWork(self, work):
            self.emit(work * self.factor)
    assert sorted(run([1, 2], lambda w: w.job(Triple))) == [3, 6]


def test_pool_survives_across_runs():
    first = set(run(range(50), lambda w: w.job(lambda x: os.getpid())))
    second = set(run(range(50), lambda w: w.job(lambda x: os.getpid())))
    assert first & second
