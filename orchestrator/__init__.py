"""Constellation's code location and its instruction engine."""
