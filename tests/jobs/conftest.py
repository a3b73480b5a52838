from tests.db.conftest import backend, engine, postgres, session

__all__ = ["backend", "engine", "postgres", "session"]
