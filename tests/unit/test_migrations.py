"""The migration history stays one straight line, numbered in order: merges must order new revisions."""

from __future__ import annotations

from importlib.resources import files

from alembic.config import Config
from alembic.script import ScriptDirectory


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(files("gpupool.store") / "migrations"))
    return ScriptDirectory.from_config(config)


def test_the_migration_history_has_one_head_and_no_branches() -> None:
    scripts = _scripts()
    assert len(scripts.get_heads()) == 1, f"two migrations revise the same parent: {scripts.get_heads()}"
    revisions = list(scripts.walk_revisions())
    assert all(not isinstance(r.down_revision, tuple) for r in revisions)  # no merge points either
    numbers = [r.revision for r in reversed(revisions)]
    assert numbers == [f"{i:04d}" for i in range(1, len(numbers) + 1)]
