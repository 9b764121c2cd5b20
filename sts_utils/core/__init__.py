"""Layer 0, the base: paths and settings, every exception type, atomic files (imports nothing of the package)."""
