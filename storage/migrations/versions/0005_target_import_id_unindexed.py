"""target.import_id unindexed

No query looks a target up by its import: the index only cost every imported row an entry
(about 0.75 µs a row, 0.75 s of a million-row import; docs/imports.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 13:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("target", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_target_import_id"))


def downgrade() -> None:
    with op.batch_alter_table("target", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_target_import_id"), ["import_id"], unique=False)
