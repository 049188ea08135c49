"""Storage: SQLAlchemy models, Alembic migrations and the conversation rows sessions report."""
