package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Pace is how many instances a roll-out may have draining at once: a count, or a percentage of the
// runner's instances, written "25%" and rounded up so that a small fleet still moves. 0 turns the
// roll-out off.
type Pace struct {
	n       int
	percent bool
}

// DefaultRolloutMaxDraining keeps four fifths of the fleet serving while a new image rolls out, and
// gets through any fleet in about five rounds of drains (a round lasts as long as the longest job on
// the instances drained in it); a fleet of up to five instances drains one at a time.
var DefaultRolloutMaxDraining = Pace{n: 20, percent: true}

// PaceCount is a pace of n instances.
func PaceCount(n int) Pace { return Pace{n: n} }

// PacePercent is a pace of p percent of the instances.
func PacePercent(p int) Pace { return Pace{n: p, percent: true} }

// Off reports whether the pace lets nothing drain.
func (p Pace) Off() bool { return p.n == 0 }

// Of is how many of instances may drain at once.
func (p Pace) Of(instances int) int {
	if !p.percent {
		return p.n
	}
	if p.n == 0 || instances == 0 {
		return 0
	}
	return (instances*p.n + 99) / 100
}

// String writes the pace as config.toml does.
func (p Pace) String() string {
	if p.percent {
		return strconv.Itoa(p.n) + "%"
	}
	return strconv.Itoa(p.n)
}

// UnmarshalTOML implements toml.Unmarshaler: an integer, or a string holding an integer or a
// percentage.
func (p *Pace) UnmarshalTOML(data any) error {
	switch v := data.(type) {
	case int64:
		*p = Pace{n: int(v)}
		return p.check()
	case string:
		digits, percent := strings.CutSuffix(strings.TrimSpace(v), "%")
		n, err := strconv.Atoi(strings.TrimSpace(digits))
		if err != nil {
			return fmt.Errorf("invalid pace %q: want a number of instances such as 2, or a percentage of them such as \"25%%\"", v)
		}
		*p = Pace{n: n, percent: percent}
		return p.check()
	}
	return fmt.Errorf("want a number of instances or a percentage such as \"25%%\", got %s", describeTOML(data))
}

// check refuses a negative pace and a percentage above 100.
func (p Pace) check() error {
	switch {
	case p.n < 0:
		return fmt.Errorf("%s: want 0 or more (0 turns the roll-out off)", p)
	case p.percent && p.n > 100:
		return fmt.Errorf("%s: a percentage of the instances is at most 100%%", p)
	}
	return nil
}

// MarshalTOML implements toml.Marshaler: a count as an integer, a percentage as a string.
func (p Pace) MarshalTOML() ([]byte, error) {
	if p.percent {
		return []byte(strconv.Quote(p.String())), nil
	}
	return []byte(p.String()), nil
}

// MarshalText implements encoding.TextMarshaler, for the JSON views of the config.
func (p Pace) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// GetRolloutMaxDraining is how many instances a roll-out (instances the plugin reports as launched
// from an older launch template version) may have draining at once.
func (a *AutoscalerConfig) GetRolloutMaxDraining() Pace {
	if a.RolloutMaxDraining == nil {
		return DefaultRolloutMaxDraining
	}
	return *a.RolloutMaxDraining
}
