// Package logging is the one fallback for a component that was given no logger: such a component is
// quiet rather than writing to the process's standard error behind its caller's back.
package logging

import (
	"io"

	"github.com/sirupsen/logrus"
)

// Discard returns a logger that writes nothing.
func Discard() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// Or returns log, or a logger that writes nothing when log is nil.
func Or(log logrus.FieldLogger) logrus.FieldLogger {
	if log == nil {
		return Discard()
	}
	return log
}
