"""Alembic environment: the URL comes from the caller (hilum.migrate), never from alembic.ini."""

from alembic import context

from hilum.tables import Base

config = context.config
target_metadata = Base.metadata

connectable = config.attributes.get("connection")
if connectable is None:
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
else:
    context.configure(connection=connectable, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
