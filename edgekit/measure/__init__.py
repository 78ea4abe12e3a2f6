"""Judging files: validation in their runtimes, the bench harness, interleaved speed verdicts,
gates, recommendations and file inspection."""
