"""The pull-through cache: secreg as a mirror of upstream registries, beside its own repositories.

The `proxy:` section is parsed by `secreg.config.proxy`; `routing` maps a local name to an upstream and its name there;
`upstream` is the HTTPS client (token flow, Basic, redirects); `fetch` streams a blob from the upstream into
storage while clients read it; `model` is the registry model that wraps the local one.
"""
