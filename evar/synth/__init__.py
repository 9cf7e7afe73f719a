"""Generated audio in real dataset layouts: the smoke run and the tests' data."""
