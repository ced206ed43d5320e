#!/usr/bin/env python3
"""Import cycles between our Rust files, and between the top-level modules of each crate.

Reads every `use` statement and every inline `crate::`/`super::`/`self::` path of the
workspace's crates, resolves each to the file that defines the item (following `pub use`
re-exports, so importing a type through its module's re-export counts as depending on
the file that defines it), and reports every strongly connected component of more than
one file. A crate's top-level modules (src/model, src/judge, ...) are checked the same way
with their files merged. Test modules (`#[cfg(test)]` to the end of a file) are left out:
a test may use any part of its crate. Exit status 1 when a cycle exists.

Cargo already forbids cycles between the crates (src/tokenizer, src/model, src/judge,
src/engine, src/service, the root crate and training); this checks the files inside each.

Usage: scripts/check_cycles.py [crate_root_dir ...]   (default: every crate of the workspace)
       scripts/check_cycles.py --self-test                (the checker finds planted cycles)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOTS = ["src/tokenizer", "src/model", "src/judge", "src/engine", "src/service", "src",
                 "training/src"]
ITEM = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+)?(?:async\s+)?"
    r"(?:struct|enum|fn|trait|type|const|static|mod|union|macro_rules!)\s+(\w+)", re.M)
USE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
INLINE = re.compile(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)")


def strip(code):
    """Code without comments, string and char literals (their text is not a path)."""
    code = re.sub(r"//[^\n]*", "", code)
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    code = re.sub(r'r(#*)".*?"\1', '""', code, flags=re.S)
    code = re.sub(r'"(?:\\.|[^"\\])*"', '""', code, flags=re.S)
    return re.sub(r"'(?:\\.|[^'\\])'", "' '", code)


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (aliases dropped)."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    i = tree.index("{")
    prefix, body = tree[:i], tree[i + 1:tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in filter(None, parts):
        out += [prefix + x if x != "self" else prefix.rstrip(":") for x in expand(p)]
    return out


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path tuple -> Path
        for f in sorted(src.rglob("*.rs")):
            rel = f.relative_to(src).with_suffix("").parts
            if any((src.joinpath(*rel[:k]) / "Cargo.toml").exists() for k in range(1, len(rel))):
                continue  # a crate of its own inside this one's folder (src/model, ...)
            if rel == ("build",) and (src / "Cargo.toml").exists():
                continue  # a build script is a program of its own
            if rel in (("lib",), ("main",)):
                mod = ()
            elif rel[-1] == "mod":
                mod = rel[:-1]
            else:
                mod = rel
            if rel == ("main",) and (src / "lib.rs").exists():
                continue  # the binary is a crate of its own that uses the library by name
            self.files[mod] = f
        self.code = {m: strip(f.read_text()) for m, f in self.files.items()}
        self.items = {m: set(ITEM.findall(c)) for m, c in self.code.items()}
        self.reexports = {m: {} for m in self.files}
        for m, c in self.code.items():
            for vis, tree in USE.findall(c):
                if vis:
                    for p in expand(tree):
                        name = p.split("::")[-1]
                        self.reexports[m][name] = self.absolute(m, p)

    def absolute(self, mod, path):
        segs = path.split("::")
        base = list(mod)
        if segs[0] == "crate":
            base, segs = [], segs[1:]
        elif segs[0] in ("super", "self"):
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super" and base:
                    base.pop()
                segs = segs[1:]
        elif tuple(base) + (segs[0],) in self.files:
            pass  # a child module named without `self::`
        else:
            return None  # an external crate or a name in scope
        return tuple(base) + tuple(segs)

    def resolve(self, path, seen=()):
        """The module (file) that defines the item `path` names."""
        if path is None or path in seen:
            return None
        for k in range(len(path), -1, -1):
            mod = path[:k]
            if mod in self.files:
                rest = path[k:]
                if not rest or rest[0] == "*" or rest[0] in self.items[mod]:
                    return mod
                if rest[0] in self.reexports[mod]:
                    target = self.reexports[mod][rest[0]]
                    if target is None:
                        return mod  # re-exported from another crate
                    return self.resolve(target + rest[1:], seen + (path,)) or mod
                return mod
        return None

    def edges(self):
        out = {m: set() for m in self.files}
        for m, c in self.code.items():
            # Test modules (by our convention last in a file) may use any part of the
            # crate; the layering is about the code they test.
            cut = c.find("#[cfg(test)]")
            text = c if cut < 0 else c[:cut]
            paths = [p for _, t in USE.findall(text) for p in expand(t)]
            paths += INLINE.findall(text)
            for p in paths:
                target = self.resolve(self.absolute(m, p))
                if target is not None and target != m:
                    out[m].add(target)
        return out


def sccs(graph):
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def self_test():
    """Plants cycles in a throw-away crate and checks each is found, and that a clean
    layering and a test module's back-reference are not reported."""
    import tempfile
    cases = {
        # a -> b -> a, through a re-export in a folder module's mod.rs.
        "cycle": {"lib.rs": "pub mod a;\npub mod m;\n",
                  "a.rs": "use crate::m::B;\npub struct A;\n",
                  "m/mod.rs": "mod b;\npub use b::B;\n",
                  "m/b.rs": "pub struct B;\nfn f() -> crate::a::A { crate::a::A }\n"},
        # a child using an item its mod.rs defines while mod.rs re-exports the child.
        "hub": {"lib.rs": "pub mod m;\n",
                "m/mod.rs": "mod c;\npub use c::C;\npub struct E;\n",
                "m/c.rs": "use super::E;\npub struct C(E);\n"},
        "clean": {"lib.rs": "pub mod a;\npub mod b;\n",
                  "a.rs": "use crate::b::{self, B as Bee};\npub struct A;\n// crate::b::x\n"
                          "#[cfg(test)]\nmod tests { use crate::b::B; }\n",
                  "b.rs": "pub struct B;\nconst S: &str = \"crate::a::A\";\n"
                          "#[cfg(test)]\nmod tests { use crate::a::A; }\n"},
    }
    for name, files in cases.items():
        with tempfile.TemporaryDirectory() as d:
            for path, text in files.items():
                p = Path(d) / path
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
            crate = Crate(Path(d))
            found = sccs(crate.edges())
            assert bool(found) == (name != "clean"), f"{name}: {found}"
    print("self-test passed: planted cycles found, clean layering passes")
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    roots = [ROOT / a for a in (sys.argv[1:] or DEFAULT_ROOTS)]
    found = False
    for src in roots:
        crate = Crate(src)
        graph = crate.edges()
        name = lambda m: str(crate.files[m].relative_to(ROOT))
        for comp in sccs(graph):
            found = True
            print(f"file cycle in {src.relative_to(ROOT)}:")
            for m in comp:
                deps = sorted(name(t) for t in graph[m] if t in comp)
                print(f"  {name(m)} -> {', '.join(deps)}")
        top = {}
        for m, targets in graph.items():
            a = m[:1]
            top.setdefault(a, set()).update(t[:1] for t in targets if t[:1] != a and t[:1])
        for comp in sccs({k: v for k, v in top.items() if k}):
            found = True
            mods = ", ".join("::".join(m) for m in comp)
            print(f"module cycle in {src.relative_to(ROOT)}: {mods}")
            for a in comp:
                for m, targets in graph.items():
                    for t in targets:
                        if m[:1] == a and t[:1] in comp and t[:1] != a:
                            print(f"  {name(m)} -> {name(t)}")
    if not found:
        print(f"no import cycles in {', '.join(str(r.relative_to(ROOT)) for r in roots)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
