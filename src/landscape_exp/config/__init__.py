"""The config's layout: every section read once into frozen, checked settings, the allowed choices,
one spec per task. Imports nothing of the project but errors."""
