#!/usr/bin/env python3
"""check_layers.py - fails on an #include that points up the layer order of docs/ARCHITECTURE.md.

The "Layers" table there lists the folders of src/ bottom first; a file in src/Y/ may include
"X/..." only when X is Y itself or listed before Y. Every folder of src/ must have a row (so a new
layer is placed deliberately), and every row must be a folder. Usage: check_layers.py [repo root].
Exit status 0 when clean, 1 with one line per problem otherwise. check_layers.py --self-test checks
the checker on a small made-up tree (a clean one passes, one back edge fails).
"""
import os
import re
import sys


def layer_order(doc_path):
    """The layer names in table order, from rows that start with '| name/ |'."""
    order = []
    in_layers = False
    with open(doc_path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                in_layers = line.strip() == "## Layers"
                continue
            m = re.match(r"^\|\s*([a-z_]+)/\s*\|", line)
            if in_layers and m:
                order.append(m.group(1))
    return order


INCLUDE = re.compile(r'^\s*#\s*include\s*"([a-z_]+)/[^"]+"', re.M)


def self_test():
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "docs"))
        with open(os.path.join(root, "docs", "ARCHITECTURE.md"), "w") as f:
            f.write("# x\n## Layers\n| layer | holds |\n|---|---|\n| base/ | a |\n| repo/ | b |\n## Threads\n")
        for d, text in (("base", '#include "base/a.h"\n'), ("repo", '#include "base/a.h"\n')):
            os.makedirs(os.path.join(root, "src", d))
            with open(os.path.join(root, "src", d, "a.c"), "w") as f:
                f.write(text)
        with contextlib.redirect_stdout(io.StringIO()):
            clean = main(root)
        with open(os.path.join(root, "src", "base", "b.h"), "w") as f:
            f.write('/* up */\n#include "repo/a.h"\n')
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            back = main(root)
    ok = clean == 0 and back == 1 and "src/base/b.h:2: includes repo/" in out.getvalue()
    print("check_layers self-test:", "ok" if ok else f"FAILED (clean {clean}, back edge {back}: {out.getvalue()})")
    return 0 if ok else 1


def main(root):
    src = os.path.join(root, "src")
    order = layer_order(os.path.join(root, "docs", "ARCHITECTURE.md"))
    problems = []
    if not order:
        problems.append("docs/ARCHITECTURE.md: no layer table found under '## Layers'")
    rank = {name: i for i, name in enumerate(order)}
    folders = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))
    for d in folders:
        if d not in rank:
            problems.append(f"src/{d}/: not in the layer table of docs/ARCHITECTURE.md")
    for name in order:
        if name not in folders:
            problems.append(f"docs/ARCHITECTURE.md: layer {name}/ has no folder in src/")
    for d in folders:
        if d not in rank:
            continue
        for dirpath, _, files in os.walk(os.path.join(src, d)):
            for fn in sorted(files):
                if not fn.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, fn)
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                for m in INCLUDE.finditer(text):
                    x = m.group(1)
                    if x in rank and rank[x] > rank[d]:
                        line = text.count("\n", 0, m.start()) + 1
                        rel = os.path.relpath(path, root)
                        problems.append(f"{rel}:{line}: includes {x}/, which is above {d}/ (a back edge)")
    for p in problems:
        print(p)
    if problems:
        print(f"check_layers: {len(problems)} problem(s); layer order: {' < '.join(order)}")
        return 1
    print(f"check_layers: ok ({' < '.join(order)})")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")))
