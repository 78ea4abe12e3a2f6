"""The build: the plan, the stages, the pipeline (order of stages and back-off loop), single-file validation."""
