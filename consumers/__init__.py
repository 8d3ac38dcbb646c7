"""polybus consumers."""
