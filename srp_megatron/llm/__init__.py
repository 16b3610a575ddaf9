"""Clients of OpenAI-compatible chat endpoints (guard labelers, the rewriter, judges)."""
