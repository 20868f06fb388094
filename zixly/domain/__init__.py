"""Domain services and repositories. Repositories own queries; they also filter by tenant
(row-level security is the backstop, not the only line)."""
