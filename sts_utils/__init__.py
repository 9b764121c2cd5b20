"""Spike Train Scalograms (STS) compendium utilities."""
__version__ = "0.1.0"
