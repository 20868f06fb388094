"""One module per area of the schema; ``zixly.graphql.schema`` merges them."""
