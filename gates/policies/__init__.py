"""Gate policies: versioned promotion rules, the CI promotion webhook and gated-target guards."""
