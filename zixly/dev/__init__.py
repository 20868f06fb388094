"""The development stack: embedded PostgreSQL and Redis, the dev server, the demo, the mail
sink, seed data and the provider sandbox. Entry points only: nothing in the product imports it."""
