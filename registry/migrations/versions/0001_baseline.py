"""Baseline: the index as spp 0.1.0 created it (before Alembic).

A frozen copy of that schema, not derived from spp.registry.schema: a migration must keep
creating what it created when it shipped. An index spp 0.1.0 wrote is stamped with this
revision and then upgraded.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("meta", sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False))
    op.create_table(
        "names", sa.Column("name", sa.Text, primary_key=True), sa.Column("last_version", sa.Integer, nullable=False)
    )
    op.create_table(
        "versions",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("backbone", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("d_model", sa.Integer, nullable=False),
        sa.Column("n_tokens", sa.Integer, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("parent", sa.Text, nullable=True),
        sa.Column("main_metric", sa.Float, nullable=True),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("deprecated", sa.Integer, nullable=False, server_default="0"),
        sa.Column("size", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
        sa.UniqueConstraint("name", "sha256"),
        sa.ForeignKeyConstraint(["name"], ["names.name"]),
    )
    op.create_index("versions_sha256", "versions", ["sha256"])
    op.create_table(
        "aliases",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", "alias"),
        sa.ForeignKeyConstraint(["name", "version"], ["versions.name", "versions.version"]),
    )
    op.create_index("aliases_target", "aliases", ["name", "version"])
    op.create_table(
        "tags",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("name", "version", "key"),
        sa.ForeignKeyConstraint(["name", "version"], ["versions.name", "versions.version"], ondelete="CASCADE"),
    )
    op.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")


def downgrade() -> None:
    for table in ("tags", "aliases", "versions", "names", "meta"):
        op.drop_table(table)
