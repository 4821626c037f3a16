"""Release approvals: requests opened by gate decisions, signed off by approvers, then executed."""
