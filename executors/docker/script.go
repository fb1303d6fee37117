package docker

import (
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"gitlab.com/fleetrunner/fleetrunner/common/job"
	"gitlab.com/fleetrunner/fleetrunner/common/version"
)

// shellDetect is the command of every script container: it execs the best shell of the image, which
// then reads the script from stdin (so secrets never appear in the container's command line).
const shellDetect = `if [ -x /usr/local/bin/bash ]; then exec /usr/local/bin/bash; ` +
	`elif [ -x /usr/bin/bash ]; then exec /usr/bin/bash; ` +
	`elif [ -x /bin/bash ]; then exec /bin/bash; ` +
	`elif [ -x /usr/local/bin/sh ]; then exec /usr/local/bin/sh; ` +
	`elif [ -x /usr/bin/sh ]; then exec /usr/bin/sh; ` +
	`elif [ -x /bin/sh ]; then exec /bin/sh; ` +
	`elif [ -x /busybox/sh ]; then exec /busybox/sh; ` +
	`else echo "shell not found in the job image" >&2; exit 1; fi`

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// quote makes s one single-quoted shell word.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// predefined are the variables the runner adds to every job (upstream's runner-side CI_* set).
func (r *run) predefined() job.Variables {
	pub := func(k, v string) job.Variable { return job.Variable{Key: k, Value: v, Public: true} }
	vs := job.Variables{
		pub("CI_BUILDS_DIR", r.buildsDir),
		pub("CI_PROJECT_DIR", r.projectDir),
		pub("CI_CONCURRENT_ID", "0"),
		pub("CI_CONCURRENT_PROJECT_ID", "0"),
		pub("CI_SERVER", "yes"),
		pub("CI_JOB_STATUS", "running"),
		pub("CI_JOB_TIMEOUT", strconv.Itoa(r.j.TimeoutSeconds())),
		pub("CI", "true"),
		pub("GITLAB_CI", "true"),
		pub("CI_RUNNER_SHORT_TOKEN", r.short),
	}
	if r.rc.ID != 0 {
		vs = append(vs, pub("CI_RUNNER_ID", fmt.Sprint(r.rc.ID)))
	}
	if r.rc.Name != "" {
		vs = append(vs, pub("CI_RUNNER_DESCRIPTION", r.rc.Name))
	}
	return vs
}

// runnerVersion are the variables upstream adds after the job's: a job cannot fake them.
func (r *run) runnerVersion() job.Variables {
	pub := func(k, v string) job.Variable { return job.Variable{Key: k, Value: v, Public: true} }
	return job.Variables{
		pub("CI_DISPOSABLE_ENVIRONMENT", "true"),
		pub("CI_RUNNER_VERSION", version.Version),
		pub("CI_RUNNER_REVISION", version.Rev()),
		pub("CI_RUNNER_EXECUTABLE_ARCH", runtime.GOOS+"/"+runtime.GOARCH),
	}
}

// runnerEnvironment turns [[runners]] environment ("KEY=VALUE") into variables.
func runnerEnvironment(env []string) job.Variables {
	var vs job.Variables
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vs = append(vs, job.Variable{Key: k, Value: v})
	}
	return vs
}

// scriptOptions shape one shell session.
type scriptOptions struct {
	dir      string        // working directory, created when missing
	extra    job.Variables // appended after the job's variables (e.g. CI_JOB_STATUS)
	commands []string
	// trace echoes each command before it runs, as upstream does ("$ make test").
	trace bool
}

// shellScript writes one shell session: variables exported (file variables written to files in the
// build volume, their variable set to the path), then the commands under `set -e`. The whole body is
// one brace group so the shell reads all of stdin before it runs anything; commands see EOF on stdin.
func (r *run) shellScript(o scriptOptions) string {
	var sb strings.Builder
	sb.WriteString("{\n")
	sb.WriteString("set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\n")
	if r.umask {
		sb.WriteString("umask 0000\n")
	}
	vars := append(append(job.Variables{}, r.vars...), o.extra...)
	wroteTmp := false
	for _, v := range vars {
		if !varName.MatchString(v.Key) {
			continue
		}
		if v.File {
			if !wroteTmp {
				fmt.Fprintf(&sb, "mkdir -p %s\n", quote(r.tmpDir))
				wroteTmp = true
			}
			p := r.tmpDir + "/" + v.Key
			fmt.Fprintf(&sb, "printf '%%s' %s > %s\nexport %s=%s\n", quote(v.Value), quote(p), v.Key, quote(p))
			continue
		}
		fmt.Fprintf(&sb, "export %s=%s\n", v.Key, quote(v.Value))
	}
	if o.dir != "" {
		fmt.Fprintf(&sb, "mkdir -p %s\ncd %s\n", quote(o.dir), quote(o.dir))
	}
	for _, c := range o.commands {
		if strings.TrimSpace(c) == "" {
			continue
		}
		if o.trace {
			shown := c
			if first, _, multi := strings.Cut(strings.TrimSpace(c), "\n"); multi {
				shown = first + " # collapsed multi-line command"
			}
			fmt.Fprintf(&sb, "printf '\\033[32;1m%%s\\033[0;m\\n' %s\n", quote("$ "+shown))
		}
		sb.WriteString(c)
		sb.WriteString("\n")
	}
	sb.WriteString("}\n")
	return sb.String()
}

// hasFileVariables reports whether any shell session writes files under tmpDir.
func (r *run) hasFileVariables() bool {
	for _, v := range r.vars {
		if v.File && varName.MatchString(v.Key) {
			return true
		}
	}
	return false
}

// configScript turns a runner config script (one string, possibly multi-line) into commands.
func configScript(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	return []string{s}
}
