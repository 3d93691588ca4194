"""Logs, metrics and health: what operators see."""
