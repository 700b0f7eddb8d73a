"""Extended regions: a second pool with the same security domain, kept current by replication."""
