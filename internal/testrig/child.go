package testrig

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// RunManager is `fleetrunner run -c configPath` with only executor registered, for a test binary that
// re-executes itself as a child process so that a test can kill -9 it: SIGTERM stops it forcefully,
// SIGQUIT gracefully. Logs go to stderr at debug level. It returns the process's exit code.
func RunManager(configPath, systemID, executor string, factory executors.Factory) int {
	log := logrus.New()
	log.SetLevel(logrus.DebugLevel)
	m := manager.New(log, manager.Options{ConfigPath: configPath, Registry: executors.Registry{executor: factory}, SystemID: systemID})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGQUIT)
	go func() {
		for s := range sigs {
			if s == syscall.SIGQUIT {
				m.StopGracefully()
			} else {
				m.StopForcefully()
			}
		}
	}()
	if err := m.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		return 1
	}
	return 0
}
