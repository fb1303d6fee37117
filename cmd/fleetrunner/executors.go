package main

import (
	"gitlab.com/fleetrunner/fleetrunner/common/config"
	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker"
	"gitlab.com/fleetrunner/fleetrunner/executors/dockerautoscaler"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/builtin"
)

// executorRegistry lists the executors this build runs, by config.toml `executor` name.
func executorRegistry() executors.Registry {
	return executors.Registry{
		config.ExecutorDocker:           docker.NewProvider,
		config.ExecutorDockerAutoscaler: dockerautoscaler.New(builtin.Plugins()),
	}
}
