"""polybus feeder."""
