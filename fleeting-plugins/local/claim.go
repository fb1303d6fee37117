package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"gitlab.com/fleetrunner/fleetrunner/common/fleeting"
)

var _ fleeting.GroupClaimer = (*InstanceGroup)(nil)

// claimFile is the claim's file in the group's directory: two managers on one state_dir would adopt
// and remove each other's instances.
const claimFile = "claim.json"

// claimRecord is what claim.json keeps.
type claimRecord struct {
	SystemID string    `json:"system_id"`
	Host     string    `json:"host"`
	At       time.Time `json:"at"`
}

// Claim implements fleeting.GroupClaimer with claim.json in the group's directory. A file that holds no
// claim counts as stale and is overwritten.
func (g *InstanceGroup) Claim(_ context.Context, c fleeting.Claim) error {
	path := filepath.Join(g.dir, claimFile)
	held, err := g.readClaim(path)
	if err != nil {
		return err
	}
	if held != nil && held.SystemID != c.SystemID && !c.TakeOver && time.Since(held.At) <= c.MaxAge {
		return &fleeting.GroupClaimedError{Group: fmt.Sprintf("local group %s (state_dir %s)", g.Name, g.dir), SystemID: held.SystemID, Host: held.Host, ClaimedAt: held.At}
	}
	data, err := json.Marshal(claimRecord{SystemID: c.SystemID, Host: c.Host, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	// Renamed into place, so that another manager never reads half a claim.
	tmp := path + ".tmp-" + c.SystemID
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("claim local group %s: %w", g.Name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("claim local group %s: %w", g.Name, err)
	}
	return nil
}

// Unclaim implements fleeting.GroupClaimer: it removes claim.json while it names c's manager.
func (g *InstanceGroup) Unclaim(_ context.Context, c fleeting.Claim) error {
	path := filepath.Join(g.dir, claimFile)
	held, err := g.readClaim(path)
	if err != nil || held == nil || held.SystemID != c.SystemID {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the claim on local group %s: %w", g.Name, err)
	}
	return nil
}

// readClaim reads claim.json: nil without one, or when it holds no claim (logged).
func (g *InstanceGroup) readClaim(path string) (*claimRecord, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the claim on local group %s: %w", g.Name, err)
	}
	var rec claimRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.SystemID == "" {
		g.log.WithError(err).WithField("file", path).Warn("the group's claim file holds no claim; taking it for a stale claim")
		return nil, nil
	}
	return &rec, nil
}
