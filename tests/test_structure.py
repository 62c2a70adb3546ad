"""Code structure rules (#11): no import cycle, short modules and functions.

Pure Python over the source tree (ast), no JAX.
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "linvae_jax")
MAX_MODULE_LINES = 520  # "much past 500"
MAX_FUNCTION_LINES = 110  # "about 100", docstrings not counted


def _modules():
  out = {}
  for dirpath, _, files in os.walk(ROOT):
    for fn in files:
      if fn.endswith(".py"):
        path = os.path.join(dirpath, fn)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
        out[rel[:-9] if rel.endswith(".__init__") else rel] = path
  return out


def _imports(name, path, modules):
  """Modules of linvae_jax imported at module level (not inside functions)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  pkg = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
  found = set()
  for node in tree.body:  # top level only: function-level imports break cycles on purpose
    targets = []
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
      targets = [f"{base}.{a.name}" for a in node.names] + [base]
    for t in targets:
      while t and t not in modules:
        t = t.rpartition(".")[0]
      if t and t != name:
        found.add(t)
  return found


def test_no_import_cycle():
  mods = _modules()
  graph = {m: _imports(m, p, mods) for m, p in mods.items()}
  # a package's __init__ importing its own submodules is not a cycle of concern
  for m in graph:
    graph[m] = {d for d in graph[m] if not d.startswith(m + ".")}
  state, stack = {}, []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == 1:
        cycle = stack[stack.index(d):] + [d]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = 2
  for m in sorted(graph):
    if m not in state:
      visit(m)


def test_modules_and_functions_are_short():
  too_long = []
  for name, path in _modules().items():
    if ".\u005fsrc" not in name and not name.endswith("cli"):
      continue
    with open(path) as f:
      src = f.read()
    n = len(src.splitlines())
    if n > MAX_MODULE_LINES:
      too_long.append(f"{name}: {n} lines")
    for node in ast.walk(ast.parse(src)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        doc = node.body[0]
        if isinstance(doc, ast.Expr) and isinstance(getattr(doc, "value", None), ast.Constant) \
            and isinstance(doc.value.value, str):
          length -= doc.end_lineno - doc.lineno + 1  # the docstring is documentation, not code
        if length > MAX_FUNCTION_LINES:
          too_long.append(f"{name}.{node.name}: {length} lines")
  assert not too_long, too_long
