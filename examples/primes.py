"""Count the primes below 100,000 on every core (the README's demo)."""
from job_stream.inline import Object, Work

with Work(range(100000)) as w:
    @w.job
    def is_prime(x):
        if x < 2:
            return None
        for i in range(2, int(x ** 0.5) + 1):
            if x % i == 0:
                return None
        return x

    @w.reduce(store=lambda: Object(count=0), emit=lambda store: store.count)
    def count(store, inputs, others):
        store.count += len(inputs)

    @w.result
    def show(n):
        print(f'{n} primes below 100000')
