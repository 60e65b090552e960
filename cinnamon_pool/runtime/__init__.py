"""Container engines behind the ContainerRuntime protocol."""
