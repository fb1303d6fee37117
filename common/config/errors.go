package config

import (
	"errors"
	"fmt"
	"strings"
)

// Warning is a problem that does not stop fleetrunner: a key it ignores, or a runner entry whose
// executor it does not run. The CLI logs warnings; this package never logs.
type Warning struct {
	// File is the config file the warning is about; empty when the config did not come from a file.
	File string
	// Key is the key path, for example runners[0].machine.IdleCount.
	Key     string
	Message string
	// Unknown marks a key fleetrunner does not read, as opposed to a known key whose setting it
	// ignores or questions; `fleetrunner check` fails on these, since a typo is one.
	Unknown bool
}

func (w Warning) String() string {
	if w.File == "" {
		return w.Key + ": " + w.Message
	}
	return w.File + ": " + w.Key + ": " + w.Message
}

// FieldError is one invalid value, named by its key path
// (for example runners[0].autoscaler.policy[1].idle_time).
type FieldError struct {
	Key     string
	Message string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Message }

func fieldErr(key, format string, args ...any) error {
	return &FieldError{Key: key, Message: fmt.Sprintf(format, args...)}
}

// SyntaxError is a config file that is not valid TOML. It wraps the decoder's toml.ParseError.
type SyntaxError struct {
	Line    int
	Message string
	Err     error
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d: invalid TOML: %s", e.Line, e.Message)
}

func (e *SyntaxError) Unwrap() error { return e.Err }

// FileError is what Load returns for a config file that cannot be used: the file and every
// problem found in it (each a *FieldError, a *SyntaxError or an I/O error).
type FileError struct {
	File string
	Errs []error
}

func (e *FileError) Error() string {
	if len(e.Errs) == 1 {
		return e.File + ": " + e.Errs[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problems:", e.File, len(e.Errs))
	for _, err := range e.Errs {
		b.WriteString("\n  ")
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *FileError) Unwrap() []error { return e.Errs }

// Problems splits an error from Load or Validate into its individual problems.
func Problems(err error) []error {
	var fe *FileError
	if errors.As(err, &fe) {
		return fe.Errs
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}
