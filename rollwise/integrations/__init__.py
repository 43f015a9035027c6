"""Integrations with training frameworks (TRL, verl); each imports its framework lazily."""
