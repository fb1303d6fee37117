// Package version holds the build's version and revision (set with -ldflags -X) and the User-Agent
// fleetrunner sends to GitLab.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version and Revision are set at build time:
//
//	go build -ldflags "-X gitlab.com/fleetrunner/fleetrunner/common/version.Version=1.2.3 \
//	    -X gitlab.com/fleetrunner/fleetrunner/common/version.Revision=0123abcd"
var (
	Version  = "0.0.0-dev"
	Revision = ""
)

// Rev returns Revision, or the VCS revision Go recorded in the binary (first 8 hex digits), or "unknown".
func Rev() string {
	if Revision != "" {
		return Revision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value[:min(8, len(s.Value))]
			}
		}
	}
	return "unknown"
}

// UserAgent is `fleetrunner <version> (<revision>; <go version>; <os>/<arch>)`, shaped like upstream's.
func UserAgent() string {
	return fmt.Sprintf("fleetrunner %s (%s; %s; %s/%s)", Version, Rev(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
