"""Several coordinators on one PostgreSQL database (SPEC section 10)."""
