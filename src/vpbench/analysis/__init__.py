"""Statistics over runs: latency summaries, verdicts with confidence intervals and minimum
detectable effects, comparisons of results documents, change points."""
