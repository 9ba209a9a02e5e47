"""Alembic environment for the spp index: runs on the connection spp hands over.

spp calls Alembic's commands itself (``spp registry migrate``, or on opening an embedded
index) with ``config.attributes["connection"]`` already inside a transaction that holds the
database's write lock, so there is no URL or logging setup here.
"""

from alembic import context

from spp.registry.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE needs copy-and-move
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
