"""Compatibility layers for logger APIs users already write."""
