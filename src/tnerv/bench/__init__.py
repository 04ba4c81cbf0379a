"""Benchmark reporting: tables (markdown, CSV), figures and an HTML report from result records."""
