package dockerautoscaler

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/executors"
	"gitlab.com/fleetrunner/fleetrunner/fleeting-plugins/builtin"
	"gitlab.com/fleetrunner/fleetrunner/manager"
)

// childManagerEnv, when set to a config.toml path, makes the test binary run the real manager on that
// file instead of the tests: TestManagerKilledAndRestarted starts it as a child process and kill -9s it.
const childManagerEnv = "FLEETRUNNER_DOCKERAUTOSCALER_TEST_MANAGER"

func TestMain(m *testing.M) {
	if path := os.Getenv(childManagerEnv); path != "" {
		os.Exit(runChildManager(path))
	}
	os.Exit(m.Run())
}

// runChildManager is `fleetrunner run` with only this executor registered: SIGTERM stops forcefully,
// SIGQUIT gracefully. Logs go to stderr, which the test keeps in a file.
func runChildManager(path string) int {
	log := logrus.New()
	log.SetLevel(logrus.DebugLevel)
	m := manager.New(log, manager.Options{ConfigPath: path, Registry: executors.Registry{Name: New(builtin.Registry{})}, SystemID: "s_child"})
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
