"""HEAR 2021: the module validator and any evar encoder as a HEAR module."""
