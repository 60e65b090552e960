"""The lease protocol: Lua scripts in Redis (store), the job's handle, and its heartbeat."""
