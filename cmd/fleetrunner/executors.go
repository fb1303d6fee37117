package main

import (
	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
)

// executorRegistry lists the executors this build runs, by config.toml `executor` name.
func executorRegistry() executors.Registry {
	return executors.Registry{
		config.ExecutorDocker:           docker.NewProvider,
		config.ExecutorDockerAutoscaler: dockerautoscaler.NewProvider,
	}
}
