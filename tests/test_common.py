"""The class API: Job / Reducer / Frame wired by dict or YAML configs."""
CLASSES = '''
from job_stream import common

class AddOne(common.Job):
    def postSetup(self):
        self.setups = getattr(self, 'setups', 0) + 1
    def handleWork(self, work):
        assert self.setups == 1
        self.emit(work + self.config.get('step', 1))

class Describe(common.Job):
    def handleWork(self, work):
        self.emit((work, {k: type(v).__name__ for k, v in sorted(self.config.items())}))

class Sum(common.Reducer):
    def handleInit(self, store):
        store.total = 0
    def handleAdd(self, store, work):
        store.total += work
    def handleDone(self, store):
        self.emit(store.total)

class CountTo(common.Frame):
    def handleFirst(self, store, work):
        store.target, store.total, store.i = work, 0, 0
        self.recur(0)
    def handleNext(self, store, work):
        store.total += work
    def handleDone(self, store):
        if store.i < store.target:
            store.i += 1
            self.recur(store.i)
        else:
            self.emit((store.target, store.total))
'''


def test_dict_config_with_reducer_and_options(run_script):
    proc = run_script(CLASSES + '''
common.work = [1, 2, 3]
common.run({'reducer': Sum, 'jobs': [{'type': AddOne, 'step': 10}, AddOne]})
''')
    assert proc.stdout.strip() == '39'  # default handler prints repr


def test_yaml_config_types_and_option_types(run_script, tmp_path):
    (tmp_path / 'pipe.yaml').write_text('''
jobs:
  - type: Describe
    n: 3
    x: 0.5
    s: hello
    l: [1, 2]
    d: {a: 1}
''')
    proc = run_script(CLASSES + '''
common.work = [7]
common.run('pipe.yaml', handleResult=lambda r: print(r))
''')
    assert proc.stdout.strip() == (
        "(7, {'d': 'dict', 'l': 'list', 'n': 'int', 's': 'str', 'x': 'float'})")


def test_nested_frame_in_config(run_script):
    proc = run_script(CLASSES + '''
common.work = [2, 3]
out = []
common.run({'reducer': Sum,
            'jobs': [AddOne, {'frame': CountTo, 'jobs': [{'type': AddOne, 'step': 0}]},
                     {'type': 'Describe'}]}, handleResult=out.append)
''', check=False)
    # Describe emits tuples, which Sum cannot add: the error names the reducer
    assert proc.returncode != 0 and 'While processing work with target: Sum' in proc.stderr


def test_frame_inside_reducer_module(run_script):
    proc = run_script(CLASSES + '''
class Second(common.Job):
    def handleWork(self, work):
        self.emit(work[1])
common.work = [2, 3]
common.run({'reducer': Sum,
            'jobs': [AddOne, {'frame': CountTo, 'jobs': [{'type': AddOne, 'step': 0}]},
                     Second]})
''')
    # frame(n) sums 0..n; inputs 3 and 4 -> 6 + 10
    assert proc.stdout.strip() == '16'


def test_frame_class_counts(run_script):
    proc = run_script(CLASSES + '''
common.work = [3, 4]
out = []
common.run({'frame': CountTo, 'jobs': []}, handleResult=out.append)
print(sorted(out))
''')
    assert proc.stdout.strip() == '[(3, 6), (4, 10)]'


def test_unknown_type_lists_known_ones(run_script, tmp_path):
    (tmp_path / 'bad.yaml').write_text('jobs: [AddTwo]\n')
    proc = run_script(CLASSES + '''
common.work = [1]
common.run('bad.yaml')
''', check=False)
    assert proc.returncode != 0
    assert "Unknown type 'AddTwo'" in proc.stderr
    assert 'AddOne, Describe' in proc.stderr


def test_use_multiprocessing_class_attribute(run_script):
    proc = run_script('''
import os
from job_stream import common
class Here(common.Job):
    USE_MULTIPROCESSING = False
    def handleWork(self, work):
        self.emit(os.getpid())
common.work = [1, 2]
out = []
common.run({'jobs': [Here]}, handleResult=out.append, report=False)
print(set(out) == {os.getpid()})
''')
    assert proc.stdout.strip() == 'True'
