"""The regression gate, ``invbench compare BASE_RUN NEW_RUN``: :mod:`.compare` (the verdicts and
the command), :mod:`.stats` (its paired one-sided tests and the family-wise step-down) and
:mod:`.cost` (the cost samples of a cell it judges). Rules and output: ``docs/reports.md``."""
