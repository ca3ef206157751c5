#!/usr/bin/env python3
"""Fails if a library module imports a module that (directly or not) imports it back.

Each module is a file under src/ (a folder's mod.rs and its own files count as one unit at
the folder's depth). Every depth is checked: folders (`ops`, `patch`, …), then their files.
Test code (`#[cfg(test)] mod tests` blocks, tests/ folders, test-only files) is left out.
"""
import os
import re
import sys

TEST_ONLY = {"src/vdso/own.rs", "src/arch/x86_64/test_support.rs"}


def is_module(parts):
    base = "src/" + "/".join(parts)
    return os.path.exists(base + ".rs") or os.path.exists(base + "/mod.rs")


def deepest_module(parts):
    k = len(parts)
    while k > 0 and not is_module(parts[:k]):
        k -= 1
    return parts[:k]


def sources():
    for d, _, names in os.walk("src"):
        if "/bin" in d or "/tests" in d:
            continue
        for n in names:
            path = os.path.join(d, n)
            if n.endswith(".rs") and path not in TEST_ONLY:
                yield path


def module_path(path):
    parts = path[len("src/"):-len(".rs")].split("/")
    return parts[:-1] if parts[-1] in ("mod", "lib") else parts


def edges_at(depth):
    edges = {}
    for path in sources():
        me = module_path(path)
        text = open(path).read().split("#[cfg(test)]\nmod tests")[0]
        text = re.sub(r"//.*", "", text)
        src = "::".join(me[:depth])
        refs = [deepest_module(m.split("::")) for m in re.findall(r"crate::((?:\w+::)*\w+)", text)]
        refs += [deepest_module(me[:-1] + m.split("::")) for m in re.findall(r"\bsuper::((?:\w+::)*\w+)", text)]
        for ref in refs:
            dst = "::".join(ref[:depth])
            related = dst == src or src.startswith(dst + "::") or dst.startswith(src + "::")
            if dst and src and not related:
                edges.setdefault(src, set()).add(dst)
    return edges


def cycles(edges):
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted(comp))

    for v in sorted(set(edges) | {d for ds in edges.values() for d in ds}):
        if v not in index:
            visit(v)
    return found


def main():
    bad = 0
    for depth in range(1, 5):
        edges = edges_at(depth)
        for comp in cycles(edges):
            bad += 1
            print(f"import cycle at depth {depth}: " + ", ".join(comp), file=sys.stderr)
            for a in comp:
                print(f"  {a} -> {sorted(d for d in edges.get(a, ()) if d in comp)}", file=sys.stderr)
    if bad:
        sys.exit(1)
    print("module-cycles: no import cycle among the library's modules")


if __name__ == "__main__":
    main()
