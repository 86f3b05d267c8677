"""A short tree listing of an archive, for people: blobs summarised, snapshot files with sizes."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

from labkit.package.verify import _read
from labkit.util.fs import human_bytes


def tar_tree(path: str | os.PathLike[str]) -> str:
    """A short tree listing of an archive: blobs summarised, each snapshot file with its size."""
    path = Path(path).expanduser()
    entries: dict[str, tarfile.TarInfo] = {}
    refs: dict[str, str] = {}
    with tarfile.open(path, "r:*") as tf:
        for ti in tf:
            name = ti.name.removeprefix("./").rstrip("/")
            entries[name] = ti
            if ti.isreg() and "/refs/" in name:
                refs[name] = _read(tf, ti, 64).decode("ascii", "replace")
    tree: dict[str, Any] = {}
    for name in sorted(entries, key=lambda n: n.split("/")):
        node = tree
        for part in name.split("/"):
            node = node.setdefault(part, {})

    def label(name: str, node: dict[str, Any]) -> str:
        ti = entries.get(name)
        base = name.rsplit("/", 1)[-1]
        if name.count("/") == 1 and base == "blobs" and node:
            total = sum(entries[f"{name}/{b}"].size for b in node if f"{name}/{b}" in entries)
            count = len(node)
            node.clear()  # one summary line instead of a line per blob
            return f"blobs/  ({count} files, {human_bytes(total)})"
        if ti is None or ti.isdir():
            return base + "/"
        if ti.issym():
            blob = entries.get(os.path.normpath(os.path.join(os.path.dirname(name), ti.linkname)))
            extra = f"({human_bytes(blob.size)})" if blob is not None else "(missing!)"
            return f"{base} -> {_short_link(ti.linkname)}  {extra}"
        if name in refs:
            return f"{base} = {refs[name]}"
        return f"{base}  ({human_bytes(ti.size)})"

    lines = [f"{path.name}  ({human_bytes(path.stat().st_size)}, {len(entries)} entries)"]

    def walk(node: dict[str, Any], prefix: str, parent: str) -> None:
        items = list(node.items())
        for i, (part, child) in enumerate(items):
            name = f"{parent}/{part}" if parent else part
            last = i == len(items) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{label(name, child)}")
            walk(child, prefix + ("    " if last else "│   "), name)

    walk(tree, "", "")
    return "\n".join(lines)


def _short_link(link: str) -> str:
    head, _, etag = link.rpartition("/")
    return f"{head}/{etag[:12]}…" if len(etag) > 16 else link
