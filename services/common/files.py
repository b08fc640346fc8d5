"""File identity for watchers that reload a file when a writer replaces it (mesh.yaml, endpoints.json)."""

from __future__ import annotations

from pathlib import Path

FileIdentity = tuple[int, int, int]


def file_identity(path: Path) -> FileIdentity | None:
    """(inode, mtime ns, size): changes on every atomic replace or rewrite; None if the file is absent."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
