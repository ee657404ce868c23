"""Preparing data between imports and models: images, tables, images held in tables."""
