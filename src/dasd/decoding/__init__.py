"""Decoding: both contexts of every example advance together; rules pick each token."""
