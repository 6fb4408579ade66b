"""Example pipelines built on the processing runtime."""
