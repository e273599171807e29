"""The domain packs' parts of the API (graphql_api.extensions.ApiPart): one module a
pack, over its engine-side package in ``workers.actions`` (which names its part by a
:class:`workers.node.ApiRef`, never importing this layer)."""
