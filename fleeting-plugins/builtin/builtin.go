// Package builtin is the registry of the fleeting plugins compiled into fleetrunner; cmd hands it to the
// docker-autoscaler executor, so that the executor names no plugin.
package builtin

import (
	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/aws"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/local"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/static"
)

// Plugins returns every compiled-in plugin by canonical name. A new plugin is one line here; its
// package must import only common/fleeting.
func Plugins() fleeting.Registry {
	return fleeting.Registry{
		"aws":    func() fleeting.InstanceGroup { return &aws.InstanceGroup{} },
		"local":  func() fleeting.InstanceGroup { return &local.InstanceGroup{} },
		"static": func() fleeting.InstanceGroup { return &static.InstanceGroup{} },
	}
}
