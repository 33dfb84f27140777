"""Workflows: graph definitions, validation, templates, schedules."""
