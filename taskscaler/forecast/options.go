package forecast

import "time"

// DefaultBootDelay is the lead assumed before any instance was seen booting: long enough for a cloud
// VM, so that the first forecasts err on the warm side.
const DefaultBootDelay = 5 * time.Minute

// Options configure a Forecaster; the caller resolves them ([runners.autoscaler.forecast]).
type Options struct {
	// History is how far back hours are kept and learnt from.
	History time.Duration
	// Quantile, in (0, 1], of the past hours' demand to hold idle.
	Quantile float64
	// Lead is how far ahead of demand instances are started; 0 means the observed boot delay.
	Lead time.Duration
	// Location decides hour of day and weekday or weekend; nil means the host's zone.
	Location *time.Location
}
