"""Thin click commands; each one calls library functions."""
