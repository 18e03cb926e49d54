"""Training and evaluation loops (issues 4 and 5)."""
