"""Operator features on the API: dead letters and their retry (more admin controls join here)."""
