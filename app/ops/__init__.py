"""Operating the service: metrics, access logs, rate limits, allowlists, audit, shutdown."""
