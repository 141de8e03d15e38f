"""A seeded B2B funnel for tests, demos and benchmarks (not part of the served model)."""
