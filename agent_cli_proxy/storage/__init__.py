"""The only package that imports sqlite3: the database, its migrations and repositories."""
