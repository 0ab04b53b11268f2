"""The state store (base.py) over its backends: SQLite (sqlite.py) and Redis (redis.py)."""
