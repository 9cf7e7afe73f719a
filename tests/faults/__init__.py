"""Fault-injection suite (issue 10): each fault, what evar does, and that no result row is lost."""
