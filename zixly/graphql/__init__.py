"""The Strawberry GraphQL API: thin resolvers over the domain services."""
