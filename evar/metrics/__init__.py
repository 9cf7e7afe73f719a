"""Scores: classification (accuracy, mAP) and sound event detection."""
