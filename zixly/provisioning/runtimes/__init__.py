"""Where instances run: the ``InstanceRuntime`` interface and its implementations (local
processes, containers through the Docker API), n8n distributions and images."""
