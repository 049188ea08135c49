"""Storage: SQLAlchemy models, Alembic migrations and the session recorder."""
