"""The bulk export's local side: downloaded files, per-day spooling, and a run's jobs."""
