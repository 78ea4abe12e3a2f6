"""report.md/json/png, the pruning plot and the compression summary."""
