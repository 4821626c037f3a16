"""Identity: users, API tokens, grants, and the rules that decide who may do what."""
