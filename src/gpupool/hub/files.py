"""Task files under ``GPUPOOL_STORAGE_PATH``: the bundle a user uploaded, the artifacts a node sent back.

Every path a client names is checked to stay inside its task's folder (no ``..``, no absolute paths);
uploads are streamed to disk with their size capped and their sha256 computed on the way.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any

from gpupool.bundles import BundleLimits, check_bundle
from gpupool.errors import InvalidInput, NotFound, PayloadTooLarge

BUNDLE = "bundle.tar.gz"


class TaskFiles:
    def __init__(self, root: Path, max_bytes: int, limits: BundleLimits | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.limits = limits or BundleLimits()

    def check_bundle(self, path: Path) -> None:
        """An uploaded .tar.gz whose members declare more files or bytes than the caps: 413, or 422."""
        check_bundle(path, self.limits)

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

    def bundle_from_zip(self, data: bytes, target: Path) -> list[str]:
        """Re-pack a zip upload (gRPC's ``task_zip``) as the .tar.gz bundle nodes unpack; its file names.

        Every member is checked as an HTTP upload's paths are: no ``..``, no absolute path, no link; and
        the sizes it declares are what is read, capped in total, so a zip bomb stops at the cap.
        """
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise InvalidInput("task_zip is not a zip archive", field="task_zip") from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        names: list[str] = []
        total, cap = 0, min(self.max_bytes, self.limits.max_unpacked_bytes)
        if len(archive.infolist()) > self.limits.max_files:
            raise PayloadTooLarge(
                f"task_zip holds more than {self.limits.max_files} files",
                details={"field": "task_zip", "limit": self.limits.max_files},
            )
        try:
            with archive, tarfile.open(partial, "w:gz") as tar:
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise InvalidInput(f"task_zip holds a link: {info.filename!r}", field="task_zip")
                    relative = safe_relative(info.filename).as_posix()
                    total += info.file_size
                    if total > cap:
                        raise PayloadTooLarge(
                            f"task_zip unpacks to over {cap} bytes",
                            details={"field": "task_zip", "limit": cap},
                        )
                    member = tarfile.TarInfo(relative)
                    member.size = info.file_size
                    member.mode = 0o755 if mode & 0o111 else 0o644
                    with archive.open(info) as source:
                        tar.addfile(member, source)
                    names.append(relative)
            partial.replace(target)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as exc:
            raise InvalidInput(f"task_zip is damaged: {exc}", field="task_zip") from exc
        finally:
            partial.unlink(missing_ok=True)
        return names

    def bundle_zip(
        self, task_id: str, extra: dict[str, bytes] | None = None, renames: dict[str, str] | None = None
    ) -> bytes:
        """The task's bundle as a zip (what a node that takes zips is sent): ``renames`` moves files,
        ``extra`` files are added (replacing any of that name); executable files keep their mode."""
        extra, renames = dict(extra or {}), dict(renames or {})
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            path = self.task_dir(task_id) / BUNDLE
            if path.is_file():
                with tarfile.open(path, "r:gz") as tar:
                    for member in tar:
                        source = tar.extractfile(member) if member.isfile() else None
                        name = renames.get(member.name, member.name)
                        if source is None or name in extra:
                            continue
                        info = zipfile.ZipInfo(safe_relative(name).as_posix())
                        info.external_attr = ((member.mode & 0o777) | stat.S_IFREG) << 16
                        info.compress_type = zipfile.ZIP_DEFLATED
                        with source, archive.open(info, "w") as target:
                            shutil.copyfileobj(source, target, 1 << 20)
            for name, content in extra.items():
                info = zipfile.ZipInfo(safe_relative(name).as_posix())
                info.external_attr = (0o755 | stat.S_IFREG) << 16
                archive.writestr(info, content, zipfile.ZIP_DEFLATED)
        return out.getvalue()

    def artifacts_zip(self, task_id: str, artifacts: list[dict[str, Any]]) -> bytes:
        """The task's artifacts as one zip (gRPC's ``result_zip``), each under the path it was sent as."""
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for item in artifacts:
                archive.write(self.artifact(task_id, item["path"]), item["path"])
        return out.getvalue()

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
