"""A frame (a while loop per input): sum 1..n for each n, one term per trip."""
from job_stream.inline import Object, Work

with Work([3, 10, 100]) as w:
    @w.frame(store=lambda: Object(total=0, i=0), emit=lambda s: s)
    def count_up(store, n):
        if store.i < n:       # not done: send the next term round the loop
            store.i += 1
            return store.i
        # returning None ends the loop; emit(store) is passed on

    @w.job
    def term(i):
        return i              # any per-term work would go here

    @w.frameEnd
    def add(store, term):
        store.total += term

    @w.result
    def show(store):
        print(f'sum(1..{store.i}) = {store.total}')
