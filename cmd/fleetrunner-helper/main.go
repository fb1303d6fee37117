// Command fleetrunner-helper runs inside the helper container of a Docker job: it fetches the sources,
// restores and saves the cache, downloads and uploads artifacts, waits for services to listen and opens
// the job's directories to a non-root script. It is a static binary with no
// git or docker dependency, so an image of it can be built on any engine without a registry.
//
// Progress goes to stdout (shown in the job log); a failure is one line on stderr and exit status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"gitlab.com/fleetrunner/fleetrunner/common/version"
	"gitlab.com/fleetrunner/fleetrunner/executors/docker/helper/workdir"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

var commands = []command{
	{"get-sources", "clone or fetch the repository and check out the job's commit", runGetSources},
	{"cache-extract", "extract the first existing cache archive into the project directory", runCacheExtract},
	{"cache-archive", "archive paths of the project directory into a cache file", runCacheArchive},
	{"artifacts-download", "download and extract a dependency's artifacts", runArtifactsDownload},
	{"artifacts-upload", "archive and upload the job's artifacts", runArtifactsUpload},
	{"health-check", "wait until TCP ports accept connections (a service's, from its network namespace)", runHealthCheck},
	{"workdir", "make the job's directories usable by a script that does not run as root", runWorkdir},
	{"version", "print the version", func(_ context.Context, _ []string, out io.Writer) error {
		_, err := fmt.Fprintf(out, "fleetrunner-helper %s (%s)\n", version.Version, version.Rev())
		return err
	}},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		return 2
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		if err := applyUmask(os.Getenv(workdir.UmaskEnv)); err != nil {
			fmt.Fprintf(stderr, "fleetrunner-helper: %v\n", err)
			return 2
		}
		err := c.run(ctx, args[1:], stdout)
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		if err != nil {
			fmt.Fprintf(stderr, "fleetrunner-helper %s: %s\n", c.name, oneLine(err.Error()))
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "fleetrunner-helper: unknown command %q; run fleetrunner-helper help\n", args[0])
	return 2
}

func applyUmask(v string) error {
	if v == "" {
		return nil
	}
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("%s=%q is not an octal umask such as 0022", workdir.UmaskEnv, v)
	}
	syscall.Umask(int(n))
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: fleetrunner-helper COMMAND [flags]")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-20s %s\n", c.name, c.summary)
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// newFlags makes a flag set whose errors come back to run (as one line) instead of exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("fleetrunner-helper "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string, required map[string]*string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; every value goes with a flag", fs.Arg(0))
	}
	var missing []string
	fs.VisitAll(func(f *flag.Flag) {
		if p, ok := required[f.Name]; ok && *p == "" {
			missing = append(missing, "--"+f.Name)
		}
	})
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return nil
}
