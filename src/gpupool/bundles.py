"""Task bundles (``.tar.gz``) checked and unpacked under a cap on unpacked bytes and file count.

A megabyte of gzip can stand for a gigabyte of zeros. The hub reads a bundle's member headers at
upload (each declares its size before its data) and refuses one that declares more than the cap;
the node unpacks it as a stream, member by member, and stops at the same caps, removing what it had
written, so a bomb that slipped past an older hub still never fills the node's disk.
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gpupool.bounds import MAX_BUNDLE_FILES, MAX_BUNDLE_UNPACKED_BYTES
from gpupool.errors import InvalidInput, PayloadTooLarge


@dataclass(frozen=True, slots=True)
class BundleLimits:
    max_unpacked_bytes: int = MAX_BUNDLE_UNPACKED_BYTES
    max_files: int = MAX_BUNDLE_FILES


class _Tally:
    """Members and declared bytes seen so far; raises at the first member past a cap."""

    def __init__(self, limits: BundleLimits) -> None:
        self.limits = limits
        self.files = 0
        self.size = 0

    def add(self, member: tarfile.TarInfo) -> None:
        if member.issparse():
            raise InvalidInput(f"the bundle holds a sparse file: {member.name!r}", field="bundle")
        self.files += 1
        self.size += max(member.size, 0)
        if self.files > self.limits.max_files:
            raise PayloadTooLarge(
                f"the bundle holds more than {self.limits.max_files} files",
                details={"field": "bundle", "limit": self.limits.max_files},
            )
        if self.size > self.limits.max_unpacked_bytes:
            raise PayloadTooLarge(
                f"the bundle unpacks to more than {self.limits.max_unpacked_bytes} bytes",
                details={"field": "bundle", "limit": self.limits.max_unpacked_bytes},
            )


_DAMAGED = (tarfile.TarError, EOFError, zlib.error, OSError)


def check_bundle(source: Path | IO[bytes], limits: BundleLimits) -> tuple[int, int]:
    """(files, unpacked bytes) a tar.gz declares, or 413/422 when over a cap, unsafe or not a tar."""
    tally = _Tally(limits)
    try:
        with _open_stream(source) as tar:
            for member in tar:
                tally.add(member)
                tarfile.data_filter(member, "/bundle")  # no absolute path, no '..', no link out
    except tarfile.FilterError as exc:
        raise InvalidInput(f"the bundle holds an unsafe member: {exc}", field="bundle") from exc
    except _DAMAGED as exc:
        raise InvalidInput(f"the bundle is not a readable .tar.gz: {exc}", field="bundle") from exc
    return tally.files, tally.size


def extract_bundle(archive: Path, dest: Path, limits: BundleLimits) -> None:
    """Unpack ``archive`` into ``dest`` as a stream, under the caps; on any refusal ``dest`` is removed."""
    tally = _Tally(limits)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with _open_stream(archive) as tar:
            for member in tar:
                tally.add(member)
                tar.extract(member, dest, filter="data")
    except tarfile.FilterError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidInput(f"the bundle holds an unsafe member: {exc}", field="bundle") from exc
    except _DAMAGED as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidInput(f"the bundle is not a readable .tar.gz: {exc}", field="bundle") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _open_stream(source: Path | IO[bytes]) -> tarfile.TarFile:
    """A forward-only reader (``r|*``): members come one at a time, nothing is indexed or seeked."""
    if isinstance(source, Path):
        return tarfile.open(source, mode="r|*")
    return tarfile.open(fileobj=source, mode="r|*")
