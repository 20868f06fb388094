"""Providers (Xero, HubSpot, Asana, Shopify, MYOB): the registry, the OAuth token-endpoint
adapter and the encrypted token store. Below both provisioning and integrations, which
each need them."""
