"""The code key alone: which edits of a module change it and which do not.

One script imports successive versions of the same module (same name, same
file) and prints whether each version's key equals the first one's.
"""
import json

BASE = '''
import math
LIMIT = 10

def helper(x):
    return min(x, LIMIT)

def job(x, scale=2):
    """Doc."""
    f = lambda y: y + 1
    return f(helper(x)) * scale + math.floor(x)

def make(k):
    def inner(x):
        return x * k
    return inner

closure = make(3)

def ping(n):          # mutual recursion must not loop forever
    return pong(n - 1) if n else 0

def pong(n):
    return ping(n - 1) if n else 1

import functools

def deco(f):
    @functools.wraps(f)
    def wrapper(x):
        return f(x) + 1
    return wrapper

@deco
def decorated(x):
    return x * 2

def power(x, n):
    return x ** n

squared = functools.partial(power, n=2)

import usersub

def via_submodule(x):
    return usersub.tools.twice(x)

class Model:
    RATE = 0.5
    def handleWork(self, work):
        return self.step(work)
    def step(self, work):
        return work * self.RATE

model = Model()
model.state = 1
bound = model.step

def uses_instance(x):
    return model.step(x)
'''

CASES = {
    # name: (old text, new text, target, should the key change?)
    'comment': ('return min(x, LIMIT)', 'return min(x, LIMIT)  # clamp', 'job', False),
    'moved': ('import math\n', 'import math\n\n\n\n# a block of comments\n\n', 'job', False),
    'docstring': ('"""Doc."""', '"""A longer doc.\n\n    More.\n    """', 'job', False),
    'no docstring': ('    """Doc."""\n', '', 'job', False),
    'unrelated function': ('return ping(n - 1) if n else 1', 'return 2', 'job', False),
    'body': ('* scale +', '* scale -', 'job', True),
    'lambda body': ('y + 1', 'y + 2', 'job', True),
    'default': ('scale=2', 'scale=3', 'job', True),
    'helper body': ('min(x, LIMIT)', 'max(x, LIMIT)', 'job', True),
    'helper constant': ('LIMIT = 10', 'LIMIT = 11', 'job', True),
    'closure value': ('make(3)', 'make(4)', 'closure', True),
    'recursive': ('return pong(n - 1) if n else 0', 'return pong(n - 2) if n else 0',
                  'pong', True),
    'class method': ('return work * self.RATE', 'return work / self.RATE', 'Model', True),
    'class constant': ('RATE = 0.5', 'RATE = 0.25', 'Model', True),
    'decorated function': ('return x * 2', 'return x * 3', 'decorated', True),
    'decorator': ('return f(x) + 1', 'return f(x) + 2', 'decorated', True),
    'partial arguments': ('n=2)', 'n=3)', 'squared', True),
    'partial function': ('return x ** n', 'return n ** x', 'squared', True),
    'bound method class': ('RATE = 0.5', 'RATE = 0.25', 'bound', True),
    'bound method object': ('model.state = 1', 'model.state = 2', 'bound', True),
    'submodule helper': (None, 'return 3 * x', 'via_submodule', True),
    'global instance class': ('return work * self.RATE', 'return work + self.RATE',
                              'uses_instance', True),
    'class comment': ('    RATE = 0.5', '    # the rate\n    RATE = 0.5', 'Model', False),
}

SCRIPT = '''
import importlib, json, os, sys
sys.dont_write_bytecode = True
sys.path.insert(0, '.')
from job_stream.cache import fingerprint
cases = json.load(open('cases.json'))
base = open('base.txt').read()

def key(src, target):
    open('usermod.py', 'w').write(src)
    sys.modules.pop('usermod', None)
    importlib.invalidate_caches()
    mod = importlib.import_module('usermod')
    return fingerprint(getattr(mod, target))[0]

def set_tools(body):
    os.makedirs('usersub', exist_ok=True)
    open('usersub/__init__.py', 'w').write('from . import tools\\n')
    open('usersub/tools.py', 'w').write(f'def twice(x):\\n    {body}\\n')
    for m in ('usersub', 'usersub.tools'):
        sys.modules.pop(m, None)

out = {}
for name, (old, new, target, _) in cases.items():
    set_tools('return 2 * x')
    if old is None:  # an edit of usersub/tools.py
        before = key(base, target)
        set_tools(new)
        out[name] = before != key(base, target)
        continue
    assert old in base, name
    out[name] = key(base, target) != key(base.replace(old, new), target)
print(json.dumps(out))
'''


def test_which_edits_change_the_key(run_script, tmp_path):
    (tmp_path / 'cases.json').write_text(json.dumps(CASES))
    (tmp_path / 'base.txt').write_text(BASE)
    changed = json.loads(run_script(SCRIPT).stdout)
    expected = {name: case[3] for name, case in CASES.items()}
    assert changed == expected


def test_python_version_and_depends_values(run_script, tmp_path):
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'a.csv').write_text('1,2\n')
    out = run_script('''
        import pathlib, sys
        from job_stream.cache import fingerprint
        def job(x):
            return x
        k0, comps = fingerprint(job)
        assert ('python', 'version', sys.version.split()[0]) in comps
        k1, comps = fingerprint(job, [pathlib.Path('data')])
        pathlib.Path('data/a.csv').write_text('1,3\\n')
        k2, _ = fingerprint(job, [pathlib.Path('data')])
        k3, _ = fingerprint(job, [{'alpha': 1}])
        k4, _ = fingerprint(job, [{'alpha': 2}])
        print(len({k0, k1, k2, k3, k4}), [c[0] for c in comps])
        try:
            fingerprint(job, [pathlib.Path('missing.csv')])
        except FileNotFoundError as e:
            print('refused:', e)
    ''').stdout
    assert out.startswith("5 ['python', 'code', 'file']")
    assert "refused: depends= names 'missing.csv', which does not exist" in out
