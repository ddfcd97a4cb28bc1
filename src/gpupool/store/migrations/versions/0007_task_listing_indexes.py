"""Task listings read an index in their order instead of sorting every task the user ever ran.

``GET /v1/tasks`` pages a user's tasks newest first, optionally only some states (the live ones, to
watch a queue drain). With an index on the owner alone, every page sorted all of the user's tasks:
17 ms for one row at 20,000 tasks, and growing with them. (owner, submitted_at, task_id) serves the
page as it is ordered, (owner, state, submitted_at) the states filter, (submitted_at, task_id) an
admin's listing of everyone's.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_tasks_owner", table_name="tasks")
    op.create_index("ix_tasks_owner_submitted_at", "tasks", ["owner", "submitted_at", "task_id"])
    op.create_index("ix_tasks_owner_state", "tasks", ["owner", "state", "submitted_at"])
    op.create_index("ix_tasks_submitted_at", "tasks", ["submitted_at", "task_id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_submitted_at", table_name="tasks")
    op.drop_index("ix_tasks_owner_state", table_name="tasks")
    op.drop_index("ix_tasks_owner_submitted_at", table_name="tasks")
    op.create_index("ix_tasks_owner", "tasks", ["owner"])
