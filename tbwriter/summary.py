"""Placeholder until the summary functions land."""
