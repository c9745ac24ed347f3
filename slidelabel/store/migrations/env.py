"""Alembic environment: migrations run on the connection :func:`slidelabel.store.database.migrate`
hands over, or on ``SLIDELABEL_DB`` when run from the ``alembic`` command line."""

from alembic import context

from slidelabel.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    from slidelabel.settings import Settings
    from slidelabel.store.database import make_engine, migration_connection

    with migration_connection(make_engine(Settings().database_url)) as own:
        context.configure(connection=own, target_metadata=Base.metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
