package logging

import (
	"bytes"
	"io"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestOrKeepsTheGivenLogger(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	Or(l).Info("kept")
	if !bytes.Contains(buf.Bytes(), []byte("kept")) {
		t.Fatalf("the given logger was not used: %q", buf.String())
	}
}

func TestOrFallsBackToDiscard(t *testing.T) {
	log := Or(nil)
	if log == nil {
		t.Fatal("Or(nil) returned nil")
	}
	log.WithField("k", "v").Error("dropped") // must not panic or print
	if out := Discard().Out; out != io.Discard {
		t.Fatalf("Discard writes to %T, want io.Discard", out)
	}
}
