"""Control plane: identity, roles, environments, policies, bundles, release pipeline, secrets."""
