"""Reports: tidy result tables, readers for every result file moesim writes, plots, the policy
ranking against the bounds, and one self-contained HTML report with a Markdown summary."""
