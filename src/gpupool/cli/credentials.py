"""The CLI's saved session: hub URL, username and token pair in one JSON file only its owner can read.

The file lives in ``$GPUPOOL_CONFIG_DIR`` (default: the platform's user config dir for ``gpupool``),
is created with mode 0600 and replaced atomically, so a crash mid-write never leaves a torn or
world-readable file and a concurrent reader sees either the old session or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs

FILE_NAME = "credentials.json"
CONFIG_DIR_ENV = "GPUPOOL_CONFIG_DIR"


class CredentialsError(Exception):
    """Raised when the credentials file exists but cannot be read as a session."""


@dataclass(frozen=True, slots=True)
class Credentials:
    hub: str
    username: str
    access_token: str
    refresh_token: str

    def __repr__(self) -> str:  # tokens never end up in a log line or a traceback
        return f"Credentials(hub={self.hub!r}, username={self.username!r})"


def config_dir() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV)
    return Path(override) if override else Path(platformdirs.user_config_dir("gpupool"))


def credentials_path() -> Path:
    return config_dir() / FILE_NAME


def load() -> Credentials | None:
    """The saved session, or None when nobody is logged in."""
    path = credentials_path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
        return Credentials(
            hub=str(data["hub"]),
            username=str(data["username"]),
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"{path} is not a valid credentials file; run gpupool login") from exc


def save(credentials: Credentials) -> Path:
    """Write the session with mode 0600 via a temporary file and an atomic rename."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(fd, 0o600)  # O_CREAT's mode is ignored when a stale temp file already existed
            json.dump(asdict(credentials), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def delete() -> bool:
    """Forget the session; True when there was one."""
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True
