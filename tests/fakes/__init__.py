"""Loopback fakes of provider HTTP APIs, for integration tests (no network)."""
