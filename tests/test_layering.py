"""Dependencies run one way: the package's imports (every ``import``, at any
depth in a module, read with ast) form no cycle and never reach a layer
above the importer's; the data builders reach fer_jax only through its
data layer, and fer_jax names them only by string (the data registry)."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom to top; a module belongs to the layer of its longest listed prefix.
# Within a layer imports may go either way (but not round).
LAYERS = (
    ("base", ("fer_jax", "fer_jax.imports", "fer_jax.registry",
              "fer_jax.sharding", "fer_jax.metrics", "fer_jax.viz",
              "fer_jax.checkpoint", "fer_jax.files", "fer_jax.exported")),
    ("data", ("fer_jax.data", "fer_jax.data_builders", "fer_jax.faces")),
    ("config", ("fer_jax.config_lib",)),
    ("models", ("fer_jax.models", "fer_jax.losses", "fer_jax.optim",
                "fer_jax.nets", "fer_jax.clustering")),
    ("methods", ("fer_jax.methods",)),
    ("trainer", ("fer_jax.steps", "fer_jax.evaluate", "fer_jax.train",
                 "fer_jax.batched_folds")),
    ("commands", ("fer_jax.main", "fer_jax.tools", "fer_jax.compare",
                  "fer_jax.predict", "fer_jax.export")),
)


# Folder -> the package name it is imported as (the top-level
# data_builders/ is fer_jax.data_builders, installed or from the checkout).
PACKAGES = {"fer_jax": "fer_jax", "data_builders": "fer_jax.data_builders"}


def _modules() -> dict[str, str]:
  """Dotted module name -> path, for fer_jax and fer_jax.data_builders."""
  out = {}
  for folder, pkg in PACKAGES.items():
    for d, _, files in os.walk(os.path.join(ROOT, folder)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(d, f)
          rel = os.path.relpath(path, os.path.join(ROOT, folder))[:-3]
          name = ".".join([pkg] + rel.split(os.sep))
          out[name.removesuffix(".__init__")] = path
  return out


def _imports(name: str, path: str, modules) -> set[str]:
  """The package modules ``name`` imports (``from p import m`` counts as
  p.m when m is a module; relative imports resolved)."""
  tree = ast.parse(open(path).read(), path)
  is_pkg = path.endswith("__init__.py")
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = name.split(".")
        parts = parts if is_pkg else parts[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules
                 else base for a in node.names]
    else:
      continue
    for t in targets:
      while t and t not in modules:  # import a.b.c of a package: a.b.c
        t = t.rpartition(".")[0]
      if t and t != name:
        out.add(t)
  return out


def _layer(name: str) -> int:
  best = (-1, None)
  for rank, (_, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      if (name == p or name.startswith(p + ".")) and len(p) > best[0]:
        best = (len(p), rank)
  if best[1] is None:
    pytest.fail(f"{name} is in no layer of tests/test_layering.py: add it "
                "where it belongs")
  return best[1]


@pytest.fixture(scope="module")
def graph():
  modules = _modules()
  return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_no_module_imports_a_layer_above_its_own(graph):
  upward = [f"{m} ({LAYERS[_layer(m)][0]}) imports {t} "
            f"({LAYERS[_layer(t)][0]})"
            for m, deps in sorted(graph.items()) for t in sorted(deps)
            if _layer(t) > _layer(m)]
  assert not upward, "\n".join(upward)


def test_the_imports_have_no_cycle(graph):
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for t in sorted(graph[m]):
      if state.get(t) == "open":
        cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
      elif t not in state:
        visit(t)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)
  assert not cycles, "\n".join(cycles)


BUILDERS = "fer_jax.data_builders"


def test_builders_and_fer_jax_meet_only_at_the_data_layer(graph):
  def builder(name):
    return name == BUILDERS or name.startswith(BUILDERS + ".")

  bad = [f"{m} imports {t}" for m, deps in sorted(graph.items())
         for t in sorted(deps)
         if (builder(m) and not builder(t)
             and not t.startswith("fer_jax.data."))
         or (not builder(m) and builder(t))]
  assert not bad, "\n".join(bad)


def test_the_walk_sees_the_imports(graph):
  """The checks above are not vacuous: known edges are found."""
  assert "fer_jax.evaluate" in graph["fer_jax.train"]
  assert ("fer_jax.data.classes"
          in graph["fer_jax.data_builders.fer_synth.generator"])
  assert ("fer_jax.data_builders.common"
          in graph["fer_jax.data_builders.ckplus.ckplus"])
  assert "fer_jax.registry" in graph["fer_jax.config_lib"]  # inside validate
