"""The class API with a YAML config: scale numbers, then sum them."""
import os

from job_stream import common


class Scale(common.Job):
    def handleWork(self, work):
        self.emit(work * self.config['factor'])


class Sum(common.Reducer):
    def handleInit(self, store):
        store.total = 0

    def handleAdd(self, store, work):
        store.total += work

    def handleDone(self, store):
        self.emit(store.total)


common.work = list(range(1, 11))
common.run(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'class_api.yaml'),
           handleResult=lambda total: print(f'total: {total}'))
