"""Results: the store (CSV rows), leaderboards, figures and the published numbers."""
