"""Authentication (JWT verification) and the principal a request acts as."""
