"""The `nudgeflow` command line, one module per command (main.py holds the group)."""
