package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"gitlab.com/fleetrunner/fleetrunner/metrics"
)

// fleetClient reads the runner's operator surface: its metrics server on listen_address.
type fleetClient struct {
	base string
	http *http.Client
}

func newFleetClient(base string) *fleetClient {
	return &fleetClient{base: base, http: &http.Client{Timeout: 5 * time.Second}}
}

func (c *fleetClient) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return resp, nil
}

// healthy reports whether /-/health answers 200: the runner serves.
func (c *fleetClient) healthy(ctx context.Context) bool {
	resp, err := c.get(ctx, "/-/health")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return true
}

// instances is every instance of /debug/autoscaler/instances (the demo runs one runner).
func (c *fleetClient) instances(ctx context.Context) ([]metrics.Instance, error) {
	resp, err := c.get(ctx, "/debug/autoscaler/instances")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var runners []metrics.RunnerInstances
	if err := json.NewDecoder(resp.Body).Decode(&runners); err != nil {
		return nil, fmt.Errorf("read /debug/autoscaler/instances: %w", err)
	}
	var all []metrics.Instance
	for _, r := range runners {
		all = append(all, r.Instances...)
	}
	return all, nil
}

// scrape is one GET /metrics, parsed.
type scrape map[string]*dto.MetricFamily

func (c *fleetClient) scrape(ctx context.Context) (scrape, error) {
	resp, err := c.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read /metrics: %w", err)
	}
	return scrape(mfs), nil
}

// sum adds up the series of name that carry label=value (every series when label is empty).
func (s scrape) sum(name, label, value string) float64 {
	total := 0.0
	for _, m := range s[name].GetMetric() {
		match := label == ""
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				match = true
			}
		}
		if !match {
			continue
		}
		total += m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return total
}
