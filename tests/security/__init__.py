"""Security properties across the layers: no injection, confinement, untrusted output, secrets,
and every tool fuzzed."""
