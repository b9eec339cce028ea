"""Analyses of generated data: token categories, high-PPL tokens, alignment."""
