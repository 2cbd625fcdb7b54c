"""The two-level enrich cache: per-process L1, Redis L2, and cross-process invalidation."""
