"""Core: settings, typed errors, logging, outage handling, pub/sub events, metrics and the
job queue codec. Imports nothing else of Zixly; everything may import it."""
