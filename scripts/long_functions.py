#!/usr/bin/env python3
"""Lists Rust functions outside tests longer than a limit (default 120 lines); exits 1 if any.

A function is counted from its `fn` line to its closing brace. Test code is skipped: files
under `tests/`, `benches/` and `examples/`, and `#[cfg(test)]` modules. Strings, chars and
comments are masked before braces are counted.
Usage: scripts/long_functions.py [LIMIT] [ROOT]
"""
import pathlib
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")


def mask(src: str) -> str:
    """Replaces the contents of comments, strings and chars with spaces (newlines kept)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in src[i:j])); i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = len(re.match(r'r(#*)"', src[i:]).group(1))
            end = '"' + "#" * hashes
            j = src.find(end, i + 2 + hashes)
            j = n if j < 0 else j + len(end)
            out.append("".join(ch if ch == "\n" else " " for ch in src[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append("".join(ch if ch == "\n" else " " for ch in src[i:j])); i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", src[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", src[i:i + 12])
            out.append(" " * len(m.group(0))); i += len(m.group(0))
        else:
            out.append(c); i += 1
    return "".join(out)


def functions(path: pathlib.Path):
    lines = mask(path.read_text()).split("\n")
    skip_until = -1
    for k, line in enumerate(lines):
        if k <= skip_until:
            continue
        if line.strip().startswith("#[cfg(test)]"):
            end = block_end(lines, k + 1)
            skip_until = end if end is not None else k + 1
            continue
        m = FN.match(line)
        if not m:
            continue
        end = block_end(lines, k)
        if end is not None:
            yield m.group(7), k + 1, end - k + 1


def block_end(lines, start):
    """The line where the first block opened at or after `start` closes (None: a declaration)."""
    depth, opened = 0, False
    for k in range(start, len(lines)):
        for ch in lines[k]:
            if ch == "{":
                depth, opened = depth + 1, True
            elif ch == "}":
                depth -= 1
                if opened and depth == 0:
                    return k
            elif ch == ";" and not opened and depth == 0:
                return None
    return None


def main():
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    root = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "crates")
    long = []
    for p in sorted(root.rglob("*.rs")):
        if {"tests", "benches", "examples", "target"} & set(p.parts) or p.name == "tests.rs":
            continue
        long += [(n, p, line, size) for n, line, size in functions(p) if size > limit]
    for n, p, line, size in sorted(long, key=lambda x: -x[3]):
        print(f"{p}:{line}: fn {n} is {size} lines (limit {limit})")
    sys.exit(1 if long else 0)


if __name__ == "__main__":
    main()
