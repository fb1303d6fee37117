package dockerautoscaler

import (
	"os"
	"testing"

	"gitlab.com/fleetrunner/fleetrunner/internal/testrig"
)

// childManagerEnv, when set to a config.toml path, makes the test binary run the real manager on that
// file instead of the tests: TestManagerKilledAndRestarted starts it as a child process and kill -9s it.
const childManagerEnv = "FLEETRUNNER_DOCKERAUTOSCALER_TEST_MANAGER"

func TestMain(m *testing.M) {
	if path := os.Getenv(childManagerEnv); path != "" {
		os.Exit(testrig.RunManager(path, "s_child", Name, New(testPlugins)))
	}
	os.Exit(m.Run())
}
