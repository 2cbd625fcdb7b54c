"""enrich: real-time profile enrichment for Sitecore Personalize."""

__version__ = "0.1.0"
