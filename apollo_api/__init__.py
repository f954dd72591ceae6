"""The stack's public API, shared by every service: the gRPC stubs (`apollo_api.v1`) and the PodMigration type.

Services depend on this package, never on one another's internals: the extender, the webhook and the
orchestrator talk to APOLLO through `apollo_api.v1`, and the webhook and the orchestrator agree on the
`PodMigration` custom resource through `apollo_api.podmigration`.
"""
