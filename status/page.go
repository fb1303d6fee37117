package status

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"gitlab.com/fleetrunner/fleetrunner/common/gitlab"
	"gitlab.com/fleetrunner/fleetrunner/executors"
)

// RefreshSeconds is how often the page reloads itself (meta refresh, no JavaScript).
const RefreshSeconds = 5

// Page is everything the status page shows, taken at Generated.
type Page struct {
	Generated time.Time
	Runners   []Runner
}

// Runner is one [[runners]] entry. It is named by its short token; the token itself is never shown.
type Runner struct {
	Name     string
	Short    string
	SystemID string
	Limit    int
	// Healthy is false while the manager pauses the runner's job requests after too many unhealthy
	// answers (403, transport errors), until its next probe at PausedUntil. FailedRequests is the
	// current streak of such answers, the last with LastStatus at LastRequest.
	Healthy        bool
	PausedUntil    time.Time
	FailedRequests int
	LastStatus     int
	LastRequest    time.Time
	// StandbyFor names the manager that manages the runner's fleet while this one waits on standby to
	// take it over; empty when this manager serves the runner.
	StandbyFor   string
	StandbySince time.Time
	// Fleet is nil for executors that scale no fleet; its Decisions are newest first.
	Fleet *executors.FleetStatus
	// Jobs are the running jobs, oldest first.
	Jobs []Job
}

// Job is a running job: its name and project as GitLab sent them, its web page without credentials,
// and the build stage it is in (get_sources, step_script…).
type Job struct {
	ID      int64
	Name    string
	Project string
	URL     string
	Stage   string
	Started time.Time
	// Instance is the instance the job runs on; empty before it has one, or for a fleetless executor.
	Instance string
}

//go:embed templates/*.html
var templates embed.FS

var pageTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"since":   since,
	"until":   until,
	"dur":     formatDuration,
	"status":  formatStatus,
	"refresh": func() int { return RefreshSeconds },
}).ParseFS(templates, "templates/page.html"))

// since is how long before now t was, to the second; "" for a zero t.
func since(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatDuration(now.Sub(t))
}

// until is how long after now t is, to the second; 0s once it has passed.
func until(now, t time.Time) string {
	return formatDuration(max(t.Sub(now), 0))
}

// formatDuration rounds d to the second, which is as precise as a page refreshed every few seconds is.
func formatDuration(d time.Duration) string {
	return d.Round(time.Second).String()
}

// formatStatus names a job request's answer: an HTTP status, or a transport error.
func formatStatus(status int) string {
	if status == gitlab.StatusTransportError {
		return "transport error"
	}
	return strconv.Itoa(status) + " " + http.StatusText(status)
}

// Render writes the page as HTML.
func Render(w *bytes.Buffer, p Page) error {
	if err := pageTemplate.Execute(w, p); err != nil {
		return fmt.Errorf("status page: %w", err)
	}
	return nil
}

// Handler serves the page at / (GET and HEAD) from page(), and passes every other path to next, so that
// it sits in front of the metrics server's handler. A page that fails to render is logged and answered
// with 500, never half-written.
func Handler(log logrus.FieldLogger, page func() Page, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		var buf bytes.Buffer
		if err := Render(&buf, page()); err != nil {
			log.WithError(err).Error("status page not rendered")
			http.Error(w, "status page not rendered", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// The page changes every refresh; a cached copy would show a fleet that is gone.
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(buf.Bytes())
	})
	mux.Handle("/", next)
	return mux
}
