"""The service's configuration: typed settings from the environment and an optional file."""
