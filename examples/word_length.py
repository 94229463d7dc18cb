"""Average word length of some text, with a reducer."""
from job_stream.inline import Object, Work

TEXT = """It was the best of times, it was the worst of times, it was the age of
wisdom, it was the age of foolishness, it was the epoch of belief, it was the
epoch of incredulity, it was the season of Light, it was the season of
Darkness""".split('\n')

with Work(TEXT) as w:
    @w.job
    def word_lengths(line):
        words = [word.strip(',.') for word in line.split()]
        return (sum(map(len, words)), len(words))

    @w.reduce(store=lambda: Object(letters=0, words=0),
              emit=lambda store: store.letters / store.words)
    def average(store, inputs, others):
        for letters, words in inputs:
            store.letters += letters
            store.words += words

    @w.result
    def show(avg):
        print(f'average word length: {avg:.3f}')
