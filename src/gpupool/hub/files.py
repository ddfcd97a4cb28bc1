"""Task files under ``GPUPOOL_STORAGE_PATH``: the bundle a user uploaded, the artifacts a node sent back.

Every path a client names is checked to stay inside its task's folder (no ``..``, no absolute paths);
uploads are streamed to disk with their size capped and their sha256 computed on the way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from gpupool.errors import InvalidInput, NotFound, PayloadTooLarge

BUNDLE = "bundle.tar.gz"


class TaskFiles:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def task_dir(self, task_id: str) -> Path:
        if not task_id.isalnum():
            raise InvalidInput("bad task id", field="task_id")
        return self.root / "tasks" / task_id

    def bundle(self, task_id: str) -> Path:
        path = self.task_dir(task_id) / BUNDLE
        if not path.is_file():
            raise NotFound(f"task {task_id} has no bundle")
        return path

    def artifact(self, task_id: str, relative: str) -> Path:
        return self.task_dir(task_id) / "artifacts" / safe_relative(relative)

    async def save(self, target: Path, chunks: AsyncIterator[bytes]) -> tuple[int, str]:
        """Stream ``chunks`` into ``target`` (atomically); (size, sha256). Over the cap: 413, nothing kept."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        digest, size = hashlib.sha256(), 0
        try:
            with partial.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLarge(
                            f"file over {self.max_bytes} bytes", details={"limit": self.max_bytes}
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return size, digest.hexdigest()

    def digest_of(self, path: Path) -> tuple[int, str] | None:
        if not path.is_file():
            return None
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return path.stat().st_size, digest.hexdigest()

    def discard(self, task_id: str) -> None:
        shutil.rmtree(self.task_dir(task_id), ignore_errors=True)


def safe_relative(relative: str) -> Path:
    """A relative POSIX path with no ``..``, no absolute root and no empty parts, or InvalidInput."""
    pure = PurePosixPath(relative)
    if (
        not relative
        or pure.is_absolute()
        or any(part in ("..", "") for part in pure.parts)
        or "\\" in relative
    ):
        raise InvalidInput(f"not a safe relative path: {relative!r}", field="path")
    return Path(*pure.parts)
