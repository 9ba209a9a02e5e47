"""Registry identity: a random id recorded in the index's meta table.

``spp registry copy`` uses it to refuse copying a registry onto itself; it also lets a blob
store recognise the index it belongs to.

Revision ID: 0002
Revises: 0001
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = sa.table("meta", sa.column("key", sa.Text), sa.column("value", sa.Text))
    found = op.get_bind().execute(sa.select(meta.c.value).where(meta.c.key == "registry_id")).first()
    if found is None:
        op.execute(meta.insert().values(key="registry_id", value=uuid.uuid4().hex))


def downgrade() -> None:
    op.execute("DELETE FROM meta WHERE key = 'registry_id'")
