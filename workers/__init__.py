"""rq job functions run by plain `rq worker` processes for a cinnamon-pool pool."""
