"""Readers: each parses one kind of untrusted input, in one place every feature uses."""
