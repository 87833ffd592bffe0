"""The swarm: assignment, launch, supervision, verdicts, wait, recovery and integration."""
