"""Every worker's global view of the audit topics: aggregates for the console,
/experiments and the bandit posteriors."""
