"""Learning from recorded runs: performance records and scores, selection policies, timeouts."""
