"""Hash of the package files a module runs, found by following its brainage imports (stdlib only)."""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "brainage"
# The source root that holds this package (the repository's workflow/ when PYTHONPATH names it).
ROOT = Path(__file__).resolve().parent.parent


def code_hash(*entries: str, root: str | os.PathLike = ROOT) -> str:
    """Hash of every package file that ``entries`` import, directly or not: a change to any reruns.

    Parameters
    ----------
    *entries : str
        Module names, e.g. brainage.extract.__main__ (what ``python -m brainage.extract`` runs).
    root : path, optional
        The folder holding the ``brainage`` package; default: where this module was imported from.

    Returns
    -------
    str
        16 hexadecimal characters: SHA-256 over the files' relative paths and contents, sorted by path.

    Raises
    ------
    ValueError
        If an entry is not a module of the package under ``root``.
    """
    root = Path(root).resolve()
    digest = hashlib.sha256()
    for path in module_files(*entries, root=root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_file_digest(str(path), *_stamp(str(path))))
    return digest.hexdigest()[:16]


def module_files(*entries: str, root: str | os.PathLike = ROOT) -> list[Path]:
    """The package files that ``entries`` import, transitively, sorted; the entries' own included.

    Followed: ``import brainage.x``, ``from brainage.x import y`` (``y`` a submodule or a name),
    relative imports, imports inside functions (lazy ``__getattr__`` re-exports too), and string
    constants naming a package module (registries handed to ``importlib.import_module``). Importing
    a module runs its parent packages' ``__init__.py``: those are followed as well. Import cycles
    are visited once.

    Raises
    ------
    ValueError
        If an entry is not a module of the package under ``root``.
    """
    root = os.fspath(Path(root).resolve())
    resolved: dict[str, str | None] = {}

    def resolve(module: str) -> str | None:
        if module not in resolved:
            resolved[module] = _resolve(module, root)
        return resolved[module]

    for entry in entries:
        if resolve(entry) is None:
            raise ValueError(f"code hash: entry {entry!r} is no module under {os.path.join(root, PACKAGE)}")
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        for module in _with_parents(name):
            path = resolve(module)
            if path is None or path in seen:
                continue  # a name imported from a module (not a module), or visited
            seen.add(path)
            todo.extend(_imports(path, module, *_stamp(path)))
    return sorted((Path(p) for p in seen), key=lambda p: p.relative_to(root).as_posix())


def _with_parents(name: str) -> Iterable[str]:
    # "brainage.a.b" -> "brainage", "brainage.a", "brainage.a.b"
    parts = name.split(".")
    return (".".join(parts[: i + 1]) for i in range(len(parts)))


def _resolve(module: str, root: str) -> str | None:
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = os.path.join(root, *module.split("."))
    for path in (os.path.join(base, "__init__.py"), base + ".py"):
        if os.path.isfile(path):
            return path
    return None


def _stamp(path: str) -> tuple[int, int]:
    # Cache key: an edited file is read again.
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


@functools.cache
def _file_digest(path: str, mtime_ns: int, size: int) -> bytes:
    return hashlib.sha256(Path(path).read_bytes()).digest()


@functools.cache
def _imports(path: str, module: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    # Every package module name that the file's imports (anywhere in it) and string constants
    # name. Only the import statements are parsed when that suffices: parsing every file whole
    # costs ~0.3 s per DAG build (and per cluster job, which parses the Snakefile again). An
    # import line inside a docstring counts too (one file more in the hash, never one less).
    # The whole file is parsed when it has a string naming a module (told apart from a mention
    # in a docstring) or a statement that does not parse alone.
    text = Path(path).read_text(encoding="utf-8")
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    try:
        if _MODULE_STRING.search(text):
            raise SyntaxError("string constants need the whole file")
        tree = ast.parse("\n".join(_import_statements(text)))
    except SyntaxError:
        tree = ast.parse(text, filename=path)
    names = set(_imported(tree, package))
    return tuple(sorted(n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")))


def _imported(tree: ast.AST, package: str) -> Iterable[str]:
    # Absolute names of the modules (and ``module.name``) that the tree's imports and module-name
    # strings name.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value):
            yield node.value


_IMPORT_LINE = re.compile(r"[ \t]*(?:from[ \t]+[.\w]+[ \t]+import\b|import[ \t]+\w)")
# A module name as a whole string, e.g. a registry entry handed to importlib.import_module.
_MODULE_NAME = re.compile(rf"{PACKAGE}(?:\.\w+)+")
_MODULE_STRING = re.compile(rf"""["']{_MODULE_NAME.pattern}["']""")


def _import_statements(text: str) -> Iterable[str]:
    # Each import statement as source: its line and the lines it continues on (open parentheses,
    # a trailing backslash), the first line's indentation removed.
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not _IMPORT_LINE.match(lines[i]):
            i += 1
            continue
        statement, depth = [lines[i].lstrip()], 0
        while True:
            code = lines[i].split("#", 1)[0]
            depth += code.count("(") - code.count(")")
            if (depth <= 0 and not code.rstrip().endswith("\\")) or i + 1 == len(lines):
                break
            i += 1
            statement.append(lines[i])
        yield "\n".join(statement)
        i += 1
