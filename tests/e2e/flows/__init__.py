"""Flows the end-to-end tests ship to the runner through a source ConfigMap."""
