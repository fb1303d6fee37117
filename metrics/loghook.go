package metrics

import "github.com/sirupsen/logrus"

// countedLevels are the log levels gitlab_runner_errors_total counts.
var countedLevels = []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}

// LogHook returns a logrus hook that counts warning and error lines in gitlab_runner_errors_total
// {level="warning"|"error"|…}. Add it to the process's logger.
func (m *Metrics) LogHook() logrus.Hook { return logHook{m} }

type logHook struct{ m *Metrics }

func (logHook) Levels() []logrus.Level { return countedLevels }

func (h logHook) Fire(e *logrus.Entry) error {
	h.m.errors.WithLabelValues(e.Level.String()).Inc()
	return nil
}
