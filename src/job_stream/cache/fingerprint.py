"""The code key of a cached job: what its result depends on, besides its input.

:func:`fingerprint` walks a job function (or ``Job`` class) and lists the
*components* its key is made of; the key is a hash of that list.  Covered:

* the job's own code, as compiled code (bytecode, constants, names used,
  argument layout), recursively through nested functions and lambdas;
  *not* its line numbers, comments, blank lines or file name - moving a
  function or editing a comment keeps its cache;
* default argument values and closure variables, by value; a ``Job``
  class's ``config`` (its options in a ``common.run`` config), by value;
* every global name its code (and nested code) reads, resolved in its module:
  a function or class from the user's own code is walked the same way,
  transitively (helpers of helpers); a plain value (number, string, tuple,
  list, dict, numpy array...) is hashed by value; a module of the user's
  code contributes the attributes the code reads from it (``helpers.scale``);
* library code (anything installed under site-packages) by the package
  name and version, and the standard library by the Python version, which is
  always part of the key;
* what the ``depends=`` option names: functions/classes (walked as above,
  even methods reached through instances), files and folders (by content),
  other values (by value).

Not covered (static analysis cannot see it): methods called on objects
created at run time, functions passed in as data, files the job reads, and
the internals of objects that cannot be hashed.  Name them in ``depends=``.
"""
from __future__ import annotations

import dis
import functools
import hashlib
import importlib.metadata
import inspect
import os
import pathlib
import sys
import sysconfig
import types
from typing import Any, Iterable, List, Tuple

import joblib

#: One line of a key's explanation: (kind, name, digest or version).
Component = Tuple[str, str, str]

_PLAIN = (int, float, complex, str, bytes, bool, type(None), range, slice)


def fingerprint(func: Any, depends: Iterable = (),
                config: Any = None) -> Tuple[str, List[Component]]:
    """Return ``(key, components)`` for a job function or ``Job`` class
    (whose ``config`` - its options in a ``common`` config - counts too)."""
    walker = _Walker()
    walker.root(func)
    for dep in depends:
        walker.depend(dep)
    if config:
        walker.components.append(('config', _qualname(func), _value_digest(config)))
    components = sorted(set(walker.components))
    components.insert(0, ('python', 'version', sys.version.split()[0]))
    h = hashlib.sha256(repr(components).encode())
    return h.hexdigest()[:32], components


def explain(func: Any, depends: Iterable = ()) -> str:
    """A readable account of what the key of ``func`` is made of."""
    key, components = fingerprint(func, depends)
    lines = [f'key {key}']
    lines += [f'  {kind:<8} {name}  {value}' for kind, name, value in components]
    return '\n'.join(lines)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _value_digest(value: Any) -> str:
    try:
        return joblib.hash(value)[:16]
    except Exception:  # unpicklable: only its type is known
        return 'unhashable ' + type(value).__qualname__


# -- where code comes from -------------------------------------------------
def _library_roots() -> tuple:
    roots = set()
    for name in ('purelib', 'platlib'):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(os.path.realpath(path))
    try:
        import site
        roots.update(os.path.realpath(p) for p in site.getsitepackages())
        roots.add(os.path.realpath(site.getusersitepackages()))
    except Exception:
        pass
    return tuple(roots)


def _stdlib_roots() -> tuple:
    return tuple({os.path.realpath(sysconfig.get_paths()[n])
                  for n in ('stdlib', 'platstdlib')})


_LIBRARY_ROOTS = _library_roots()
_STDLIB_ROOTS = _stdlib_roots()
_versions: dict = {}


def _origin(module_name: str) -> Tuple[str, str]:
    """('user', '') or ('library', 'pkg version') or ('python', '')."""
    top = module_name.partition('.')[0]
    if module_name == '__main__':
        return 'user', ''
    if top == 'job_stream':  # this library, wherever it is installed
        from .. import __version__
        return 'library', f'job_stream {__version__}'
    if top == 'builtins' or top in sys.builtin_module_names:
        return 'python', ''
    module = sys.modules.get(module_name) or sys.modules.get(top)
    path = getattr(module, '__file__', None)
    if not path:
        return 'python', ''  # frozen/builtin: part of the interpreter
    path = os.path.realpath(path)
    if any(path.startswith(r + os.sep) for r in _LIBRARY_ROOTS) or \
            'site-packages' in path or 'dist-packages' in path:
        return 'library', _package_version(top, module)
    if any(path.startswith(r + os.sep) for r in _STDLIB_ROOTS):
        return 'python', ''
    return 'user', ''


def _package_version(top: str, module: Any) -> str:
    if top not in _versions:
        version = None
        try:
            dists = importlib.metadata.packages_distributions().get(top, [])
            for dist in dists:
                version = f'{dist} {importlib.metadata.version(dist)}'
                break
        except Exception:
            pass
        if version is None:
            version = f'{top} {getattr(module, "__version__", "unknown")}'
        _versions[top] = version
    return _versions[top]


# -- the walk ------------------------------------------------------------------
class _Walker:
    def __init__(self):
        self.components: list = []
        self._seen: set = set()

    def root(self, func: Any) -> None:
        if isinstance(func, type):
            self._class(func, force=True)
        elif isinstance(func, functools.partial):
            self._partial('partial', func, force=True)
        elif inspect.ismethod(func):  # a bound method: its code and its object
            self._function(func, force=True)
            self._class(type(func.__self__))
            self.components.append(('value', _qualname(func) + ' (bound to)',
                                    _value_digest(func.__self__)))
        elif inspect.isfunction(func):
            self._function(func, force=True)
        elif callable(func):  # an instance with __call__: its class and state
            self._class(type(func), force=True)
            for attr, value in sorted(getattr(func, '__dict__', {}).items()):
                self._object(f'{_qualname(func)}.{attr}', value)
        else:
            raise TypeError(f'cannot fingerprint {func!r}: not a function or class')

    def depend(self, dep: Any) -> None:
        if isinstance(dep, pathlib.PurePath) or (
                isinstance(dep, str) and os.path.exists(dep)):
            self.components.append(('file', str(dep), _path_digest(dep)))
        elif isinstance(dep, type):
            self._class(dep, force=True)
        elif inspect.isfunction(dep) or inspect.ismethod(dep):
            self._function(dep, force=True)
        else:
            self.components.append(('depends', _short(dep), _value_digest(dep)))

    # Objects reached from code.
    def _object(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType):
            kind, version = _origin(value.__name__)
            if kind == 'library':
                self.components.append(('library', value.__name__, version))
            return  # user modules: handled by attribute names in _code
        if inspect.isfunction(value) or inspect.ismethod(value):
            self._function(value)
        elif isinstance(value, functools.partial):
            self._partial(name, value)
        elif isinstance(value, type):
            self._class(value)
        elif isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            mod = getattr(value, '__module__', None) or 'builtins'
            kind, version = _origin(mod)
            if kind == 'library':
                self.components.append(('library', mod.partition('.')[0], version))
        else:
            mod = getattr(type(value), '__module__', 'builtins')
            kind, version = _origin(mod)
            if kind == 'library' and not isinstance(value, _PLAIN):
                self.components.append(('library', mod.partition('.')[0], version))
            elif kind == 'user':  # an instance of the user's class: its code too
                self._class(type(value))
            self.components.append(('value', name, _value_digest(value)))

    def _partial(self, name: str, p: functools.partial, force: bool = False) -> None:
        if force:
            self.root(p.func)
        else:
            self._object(name + '.func', p.func)
        self.components.append(('value', name + ' arguments',
                                _value_digest((p.args, p.keywords))))

    def _function(self, func: Any, force: bool = False) -> None:
        if inspect.ismethod(func):
            func = func.__func__
        wrapped = getattr(func, '__wrapped__', None)
        if wrapped is not None and callable(wrapped):  # a decorator's wrapper:
            self._object(_qualname(func) + '.__wrapped__', wrapped)  # both count
        if id(func) in self._seen:
            return
        self._seen.add(id(func))
        name = _qualname(func)
        kind, version = _origin(getattr(func, '__module__', None) or '__main__')
        if kind == 'library' and not force:
            self.components.append(('library', func.__module__.partition('.')[0],
                                    version))
            return
        if kind == 'python' and not force:
            return
        code = func.__code__
        self.components.append(('code', name, _digest(_code_bytes(code, func.__doc__))))
        if func.__defaults__ or func.__kwdefaults__:
            self.components.append(('value', name + ' defaults', _value_digest(
                (func.__defaults__, func.__kwdefaults__))))
        if func.__closure__:
            for var, cell in zip(code.co_freevars, func.__closure__):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                self._object(f'{name}.<closure {var}>', value)
        self._globals(code, func.__globals__, func.__module__ or '__main__')

    def _globals(self, code: types.CodeType, namespace: dict, module: str) -> None:
        names = _names(code)
        for name in sorted(names):
            if name not in namespace:
                continue
            value = namespace[name]
            if isinstance(value, types.ModuleType) and _origin(value.__name__)[0] == 'user':
                self._user_module(value, names)
                continue
            self._object(f'{module}.{name}', value)

    def _user_module(self, module: types.ModuleType, names: set) -> None:
        """The attributes ``names`` read from one of the user's modules
        (``helpers.scale``), and from its submodules (``pkg.sub.scale``)."""
        if (id(module), id(names)) in self._seen:
            return
        self._seen.add((id(module), id(names)))
        namespace = vars(module)
        for attr in sorted(names):
            if attr not in namespace:
                continue
            value = namespace[attr]
            if isinstance(value, types.ModuleType) and \
                    _origin(value.__name__)[0] == 'user':
                self._user_module(value, names)
            else:
                self._object(f'{module.__name__}.{attr}', value)

    def _class(self, cls: type, force: bool = False) -> None:
        if id(cls) in self._seen:
            return
        self._seen.add(id(cls))
        kind, version = _origin(cls.__module__)
        if kind == 'library' and not force:
            self.components.append(('library', cls.__module__.partition('.')[0],
                                    version))
            return
        if kind == 'python' and not force:
            return
        name = _qualname(cls)
        self.components.append(('class', name, _digest(repr(
            [b.__module__ + '.' + b.__qualname__ for b in cls.__mro__]).encode())))
        for base in cls.__mro__[1:]:
            if _origin(base.__module__)[0] == 'user':
                self._class(base)
        for attr, value in sorted(vars(cls).items()):
            if attr.startswith('__') and attr.endswith('__') and attr not in (
                    '__init__', '__call__'):
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property):
                for f in (value.fget, value.fset, value.fdel):
                    if f is not None:
                        self._function(f, force=True)
            elif inspect.isfunction(value):
                self._function(value, force=True)
            else:
                self._object(f'{name}.{attr}', value)


def _names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _code_bytes(code: types.CodeType, doc: Any = None) -> bytes:
    """The parts of a code object that define behaviour, without positions."""
    consts = []
    # The first constant of a function is its docstring (or None when it has
    # none): adding or editing a docstring does not invalidate, unless the
    # code itself loads that constant.
    doc_slot = bool(code.co_consts) and (
        code.co_consts[0] is None or code.co_consts[0] == doc) and not any(
        ins.opname == 'LOAD_CONST' and ins.arg == 0
        for ins in dis.get_instructions(code))
    for i, const in enumerate(code.co_consts):
        if isinstance(const, types.CodeType):
            consts.append(('code', _code_bytes(const)))
        elif i == 0 and doc_slot:
            consts.append('<doc>')
        else:
            consts.append(repr(const))
    parts = [code.co_code, repr(consts), repr(code.co_names),
             repr(code.co_varnames), repr(code.co_freevars),
             repr(code.co_cellvars), repr((code.co_argcount,
                                           code.co_posonlyargcount,
                                           code.co_kwonlyargcount,
                                           code.co_flags)),
             getattr(code, 'co_exceptiontable', b'')]
    return b'\0'.join(p if isinstance(p, bytes) else p.encode() for p in parts)


def _path_digest(path: Any) -> str:
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f'depends= names {str(path)!r}, which does not exist: give the '
            f'path of a file or folder the job reads.')
    h = hashlib.blake2b(digest_size=8)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob('*') if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, 'rb') as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b''):
                h.update(chunk)
    return h.hexdigest()


def _qualname(obj: Any) -> str:
    mod = getattr(obj, '__module__', None) or '?'
    return f'{mod}.{getattr(obj, "__qualname__", type(obj).__qualname__)}'


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'
