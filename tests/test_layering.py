"""The package's shape: no import cycles, no module reading another's private names.

Every module of ``astro_sbgm`` is parsed with `ast` (nothing is imported), and
every import statement counts, the ones inside functions too, relative or
absolute.  An import of ``astro_sbgm.a.b`` is an edge to ``a.b`` and to the
package ``a`` (whose ``__init__`` runs first) unless the importer lives in
``a`` itself.  A private name (``_x``, not a dunder) of another module may be
read only from inside the same subpackage (``diffusion``, ``metrics``, ...);
the top-level modules are each a unit of their own.
"""

import ast
from pathlib import Path

import astro_sbgm

ROOT = Path(astro_sbgm.__file__).resolve().parent
PACKAGE = "astro_sbgm"

#: Private names still read across modules, by (importer, target module, name): none is
#: left, and a new one fails the test (give the name a public home instead).
KNOWN_PRIVATE_READS = {
}


def _modules():
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [PACKAGE] + list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _package_of(name):
    path, is_pkg = MODULES[name]
    return name if is_pkg else name.rsplit(".", 1)[0]


def _resolve(importer, node):
    """Absolute module names an import statement refers to, with the names it takes."""
    if isinstance(node, ast.Import):
        return [(alias.name, None, alias.asname) for alias in node.names]
    if node.level:
        base = _package_of(importer).split(".")
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in MODULES:
            out.append((sub, None, alias.asname or alias.name))
        else:
            out.append((target, alias.name, alias.asname or alias.name))
    return out


def _edges_and_reads():
    edges, reads = {m: set() for m in MODULES}, set()
    for importer, (path, _) in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        module_aliases = {}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target, name, bound in _resolve(importer, node):
                if not target.startswith(PACKAGE):
                    continue
                if target not in MODULES:
                    raise AssertionError(f"{importer} imports {target}, which does not exist")
                if name is None and bound is not None:
                    module_aliases[bound] = target
                own = _package_of(importer)
                parts = target.split(".")
                for i in range(2, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep != importer and not (own + ".").startswith(dep + "."):
                        edges[importer].add(dep)
                if name is not None and name.startswith("_") and not name.startswith("__"):
                    reads.add((importer, target, name))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                reads.add((importer, module_aliases[node.value.id], node.attr))
    return edges, reads


def _cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _shared_subpackage(a, b):
    pa, pb = _package_of(a), _package_of(b)
    return pa == pb and pa != PACKAGE


def private_reads():
    """Private names read across modules (outside a shared subpackage)."""
    _, reads = _edges_and_reads()
    return sorted(r for r in reads if r[0] != r[1] and not _shared_subpackage(r[0], r[1]))


def test_the_scanner_sees_imports_inside_functions():
    edges, _ = _edges_and_reads()
    assert "astro_sbgm.inpainting" in edges["astro_sbgm.estimator"]   # imported in inpaint()
    assert "astro_sbgm.diffusion" in edges["astro_sbgm.estimator"]
    assert len(MODULES) > 40


def test_no_import_cycles():
    cycles = _cycles(_edges_and_reads()[0])
    assert cycles == [], f"import cycles in astro_sbgm: {cycles}"


def test_no_module_reads_another_modules_private_names():
    found = set(private_reads())
    new = sorted(found - set(KNOWN_PRIVATE_READS))
    assert new == [], ("modules read private names of modules outside their subpackage "
                       f"(give them a public name): {new}")


def test_the_list_of_known_private_reads_is_current():
    gone = sorted(set(KNOWN_PRIVATE_READS) - set(private_reads()))
    assert gone == [], f"fixed, remove from KNOWN_PRIVATE_READS: {gone}"


if __name__ == "__main__":
    for cycle in _cycles(_edges_and_reads()[0]):
        print("cycle:", " -> ".join(cycle))
    for read in private_reads():
        print(f"    {read!r},")
