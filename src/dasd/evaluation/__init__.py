"""Scoring: final-answer extraction and checking, shared by every task."""
