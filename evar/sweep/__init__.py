"""Sweeps: grids of jobs run locally or on Ray, resumable."""
