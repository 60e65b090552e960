"""``cinnamon-pool gateway``: the one authenticated way in to a Docker host's pool containers.

``auth`` routes and authorizes a request (the bearer token must be the container's current
lease token in Redis), ``proxy`` streams it to the container and back, ``app`` puts them
together with the refusals, the ACCESS_DENIED records and the closing of ended leases' streams.
"""
