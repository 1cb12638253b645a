"""Small shared utilities (atomic I/O)."""
