"""Recovery: the manager that runs progressive levels, and the budget that bounds it."""
