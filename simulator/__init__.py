"""polybus simulator."""
