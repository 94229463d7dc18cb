"""Batch sizing as the Processor applies it: tiny items in big batches,
long items one at a time unless their durations are regular, and batches
of long items shrinking towards the end of the run."""
import random

from job_stream.batch import Done, Revoked
from job_stream.batching import BatchSizer
from job_stream.pipeline import JobStage, Pipeline
from job_stream.processor import Processor


def done(batch, seconds_per_item=0.0):
    """The outcome a worker sends for ``batch`` of the ``abs`` job: one
    list of outputs per segment."""
    outputs, start = [], 0
    for n in batch.cuts:
        outputs.append([abs(w) for w in batch.works[start:start + n]])
        start += n
    return Done(batch.id, outputs, wall=seconds_per_item * len(batch.works))


def sizes_after(samples):
    sizer = BatchSizer()
    for seconds in samples:
        sizer.observe(items=sizer.size, seconds=seconds * sizer.size)
    return sizer.size


def test_regular_long_items_are_batched_heavy_tailed_ones_are_not():
    assert sizes_after([1e-6] * 20) > 1000          # tiny: big batches
    assert sizes_after([0.010] * 20) == 5            # regular 10 ms: 50 ms
    rng = random.Random(1)
    tailed = [0.01 * rng.lognormvariate(0, 1.5) for _ in range(200)]
    sizer = BatchSizer()
    for seconds in tailed:
        sizer.observe(items=sizer.size, seconds=seconds * sizer.size)
        if sizer.long:  # a long item lately: one per batch
            assert sizer.size == 1 and not sizer.regular


def run_processor(items, seconds_per_item, slots=2):
    """Drive a Processor as the runner does, every batch taking
    ``seconds_per_item`` per work; return the batch sizes and the results."""
    p = Pipeline()
    p.root.stages.append(JobStage(abs, 'abs'))
    proc = Processor(p.compile(), {}, iter(items), slots=slots)
    sizes, results = [], []
    while not proc.finished:
        batch = proc.next_batch(multiprocessing=True)
        if batch is None:  # the input just ran out: that ends the run
            assert proc.finished
            break
        sizes.append(len(batch.works))
        proc.apply(done(batch, seconds_per_item))
        results += proc.take_results()
    return sizes, results


def test_batches_of_long_items_shrink_towards_the_end():
    sizes, results = run_processor(list(range(-200, 0)), 0.010)
    assert sorted(results) == list(range(1, 201))
    assert max(sizes) == 5
    # guided by what is left: never more than a quarter of it per batch
    # (2 slots), down to single items at the very end
    left = 200
    for size in sizes:
        assert size <= max(1, -(-left // 4))
        left -= size
    assert sizes[-3:] == [1, 1, 1]


def test_a_revoked_batch_is_queued_again_as_it_was():
    p = Pipeline()
    p.root.stages.append(JobStage(abs, 'abs'))
    proc = Processor(p.compile(), {}, iter([-1, -2, -3]), slots=1)
    first = proc.next_batch(multiprocessing=True)
    proc.apply(Revoked(first.id))
    again = proc.next_batch(multiprocessing=True)
    assert again.works == first.works and again.position == first.position
    assert again.attempts == first.attempts == 0
    proc.apply(done(again))
    results = proc.take_results()
    while (b := proc.next_batch(multiprocessing=True)) is not None:
        proc.apply(done(b))
        results += proc.take_results()
    assert proc.finished and results == [1, 2, 3]


def test_batches_taken_back_out_of_order_keep_their_input_positions():
    """Batches taken back in any order are queued again first in line; a
    new batch must still hold consecutive input items, with their position
    (job_stream.map puts results in order by it)."""
    items = list(range(-300, 0))
    p = Pipeline()
    p.root.stages.append(JobStage(abs, 'abs'))
    proc = Processor(p.compile(), {}, iter(items), slots=3)
    rng = random.Random(7)
    out, results = [], []
    while not proc.finished:
        batch = proc.next_batch(multiprocessing=True)
        if batch is not None:
            assert batch.position is not None
            assert batch.works == items[batch.position:
                                        batch.position + len(batch.works)]
            out.append(batch)
        if batch is None or len(out) == 4:
            rng.shuffle(out)
            for b in out:  # some finish, some are taken back
                if rng.random() < 0.5:
                    proc.apply(Revoked(b.id))
                else:
                    proc.apply(done(b, 1e-6))
            out = []
        results += proc.take_results()
    assert sorted(results) == list(range(1, 301))
