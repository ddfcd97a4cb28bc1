"""Decompression bombs, made here: refused by what they declare (hub) and while unpacking (node), with
nothing left on disk either way."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from gpupool.bundles import BundleLimits, check_bundle, extract_bundle
from gpupool.errors import InvalidInput, PayloadTooLarge
from gpupool.hub.files import TaskFiles

LIMITS = BundleLimits(max_unpacked_bytes=8 * 2**20, max_files=100)
BOMB_BYTES = 64 * 2**20  # 8x the cap, from well under a megabyte of gzip


class Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def tar_gz(members: dict[str, int]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BufferedReader(Zeros(size)))
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = tar_gz({"run.sh": 10, "zeros.bin": BOMB_BYTES})
    assert len(data) < 2**20
    return data


def test_hub_refuses_a_bomb_by_its_declared_size(tmp_path: Path, bomb: bytes) -> None:
    path = tmp_path / "b.tar.gz"
    path.write_bytes(bomb)
    with pytest.raises(PayloadTooLarge) as info:
        check_bundle(path, LIMITS)
    assert "unpacks to more than" in info.value.message and info.value.details["field"] == "bundle"
    assert check_bundle(io.BytesIO(tar_gz({"a": 5, "b/c": 7})), LIMITS) == (2, 12)


def test_hub_refuses_too_many_files_unsafe_paths_and_non_archives() -> None:
    with pytest.raises(PayloadTooLarge):
        check_bundle(io.BytesIO(tar_gz({f"f{i}": 0 for i in range(101)})), LIMITS)
    for name in ("../escape", "a/../../escape"):
        with pytest.raises(InvalidInput):
            check_bundle(io.BytesIO(tar_gz({name: 1})), LIMITS)
    with pytest.raises(InvalidInput):
        check_bundle(io.BytesIO(b"not a tar at all" * 100), LIMITS)


def test_node_stops_unpacking_at_the_cap_and_leaves_nothing(tmp_path: Path, bomb: bytes) -> None:
    archive, dest = tmp_path / "b.tar.gz", tmp_path / "task"
    archive.write_bytes(bomb)
    with pytest.raises(PayloadTooLarge):
        extract_bundle(archive, dest, LIMITS)
    assert not dest.exists()
    archive.write_bytes(tar_gz({f"f{i}": 1 for i in range(101)}))
    with pytest.raises(PayloadTooLarge):
        extract_bundle(archive, dest, LIMITS)
    assert not dest.exists()
    archive.write_bytes(tar_gz({"run.sh": 3000, "b": 9000})[:60])  # cut short: damaged
    with pytest.raises(InvalidInput):
        extract_bundle(archive, dest, LIMITS)
    assert not dest.exists()
    archive.write_bytes(tar_gz({"run.sh": 3, "lib/x.py": 2}))
    extract_bundle(archive, dest, LIMITS)
    assert (dest / "run.sh").read_bytes() == b"\0\0\0" and (dest / "lib" / "x.py").stat().st_size == 2


def test_grpc_zip_bomb_is_refused_at_the_unpacked_cap(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("zeros.bin", "w") as member:
        for _ in range(BOMB_BYTES // 2**20):
            member.write(bytes(2**20))
    assert len(out.getvalue()) < 2**20
    files = TaskFiles(tmp_path, max_bytes=100 * 2**20, limits=LIMITS)
    target = tmp_path / "tasks" / "t1" / "bundle.tar.gz"
    with pytest.raises(PayloadTooLarge):
        files.bundle_from_zip(out.getvalue(), target)
    assert list(target.parent.iterdir()) == []
