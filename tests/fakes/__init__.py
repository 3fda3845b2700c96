"""Loopback fakes of the chat platforms' servers, for tests that run the real client libraries."""
