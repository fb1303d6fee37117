package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RegisterRequest is a legacy registration with a registration token (spec §1.1).
type RegisterRequest struct {
	Token           string
	Description     string
	MaintenanceNote string
	AccessLevel     string // not_protected | ref_protected
	Tags            []string
	RunUntagged     bool
	Locked          bool
	Paused          bool
	MaximumTimeout  int // seconds; 0 = none
}

// TokenResponse is GitLab's answer to register, verify and token reset.
type TokenResponse struct {
	ID    int64
	Token string
	// TokenExpiresAt is zero when the token never expires.
	TokenExpiresAt time.Time
}

type tokenJSON struct {
	ID             int64      `json:"id"`
	Token          string     `json:"token"`
	TokenExpiresAt *time.Time `json:"token_expires_at"`
}

func (t tokenJSON) response() TokenResponse {
	r := TokenResponse{ID: t.ID, Token: t.Token}
	if t.TokenExpiresAt != nil {
		r.TokenExpiresAt = *t.TokenExpiresAt
	}
	return r
}

func runnerHeader(token string) http.Header {
	return http.Header{"Runner-Token": {token}}
}

// RegisterRunner registers a runner with a (legacy) registration token: POST /runners.
func (c *Client) RegisterRunner(ctx context.Context, req RegisterRequest) (TokenResponse, error) {
	body := struct {
		Info            VersionInfo `json:"info"`
		Token           string      `json:"token"`
		Description     string      `json:"description,omitempty"`
		MaintenanceNote string      `json:"maintenance_note,omitempty"`
		TagList         string      `json:"tag_list,omitempty"`
		RunUntagged     bool        `json:"run_untagged"`
		Locked          bool        `json:"locked"`
		AccessLevel     string      `json:"access_level,omitempty"`
		MaximumTimeout  int         `json:"maximum_timeout,omitempty"`
		Paused          bool        `json:"paused"`
	}{c.infoJSON(), req.Token, req.Description, req.MaintenanceNote, strings.Join(req.Tags, ","),
		req.RunUntagged, req.Locked, req.AccessLevel, req.MaximumTimeout, req.Paused}
	b, err := jsonBody(body)
	if err != nil {
		return TokenResponse{}, err
	}
	resp, err := c.do(ctx, call{method: http.MethodPost, path: "runners", body: b, contentType: "application/json",
		acceptJSON: true, header: runnerHeader(req.Token)})
	if err != nil {
		return TokenResponse{}, fmt.Errorf("registering runner: %w", err)
	}
	var t tokenJSON
	if err := decodeJSON(resp, http.StatusCreated, &t); err != nil {
		switch {
		case errors.Is(err, ErrForbidden):
			return TokenResponse{}, fmt.Errorf("registering runner: the registration token was not accepted; check it in GitLab: %w", err)
		case errors.Is(err, ErrGone):
			return TokenResponse{}, fmt.Errorf("registering runner: this GitLab has registration tokens disabled; create the runner in GitLab and register with its glrt- token: %w", err)
		}
		return TokenResponse{}, fmt.Errorf("registering runner: %w", err)
	}
	return t.response(), nil
}

// VerifyRunner checks a runner token and records systemID as one of its managers: POST /runners/verify.
// A 403 (errors.Is ErrForbidden) means the runner no longer exists in GitLab; other errors say nothing
// about the runner's existence.
func (c *Client) VerifyRunner(ctx context.Context, token, systemID string) (TokenResponse, error) {
	b, err := jsonBody(struct {
		Token    string `json:"token"`
		SystemID string `json:"system_id,omitempty"`
	}{token, systemID})
	if err != nil {
		return TokenResponse{}, err
	}
	resp, err := c.do(ctx, call{method: http.MethodPost, path: "runners/verify", body: b, contentType: "application/json",
		acceptJSON: true, header: runnerHeader(token), runnerToken: token})
	if err != nil {
		return TokenResponse{}, fmt.Errorf("verifying runner %s: %w", TokenPrefix(token), err)
	}
	if resp.StatusCode == http.StatusOK && !isJSON(resp) {
		// Old GitLab answers a plain-text "200": the token is valid, nothing else is known.
		drain(resp)
		return TokenResponse{Token: token}, nil
	}
	var t tokenJSON
	if err := decodeJSON(resp, http.StatusOK, &t); err != nil {
		if errors.Is(err, ErrForbidden) {
			return TokenResponse{}, fmt.Errorf("verifying runner %s: token is not valid (the runner was deleted or its token revoked); register it again: %w", TokenPrefix(token), err)
		}
		return TokenResponse{}, fmt.Errorf("verifying runner %s: %w", TokenPrefix(token), err)
	}
	r := t.response()
	if r.Token == "" {
		r.Token = token
	}
	return r, nil
}

// UnregisterRunner deletes the runner: DELETE /runners.
func (c *Client) UnregisterRunner(ctx context.Context, token string) error {
	b, err := jsonBody(struct {
		Token string `json:"token"`
	}{token})
	if err != nil {
		return err
	}
	return c.expectNoContent(ctx, "unregistering runner "+TokenPrefix(token),
		call{method: http.MethodDelete, path: "runners", body: b, contentType: "application/json", header: runnerHeader(token)})
}

// UnregisterRunnerManager deletes one manager (system_id) of a runner: DELETE /runners/managers.
func (c *Client) UnregisterRunnerManager(ctx context.Context, token, systemID string) error {
	b, err := jsonBody(struct {
		Token    string `json:"token"`
		SystemID string `json:"system_id"`
	}{token, systemID})
	if err != nil {
		return err
	}
	return c.expectNoContent(ctx, fmt.Sprintf("unregistering manager %s of runner %s", systemID, TokenPrefix(token)),
		call{method: http.MethodDelete, path: "runners/managers", body: b, contentType: "application/json", header: runnerHeader(token)})
}

func (c *Client) expectNoContent(ctx context.Context, what string, cl call) error {
	resp, err := c.do(ctx, cl)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("%s: %w", what, statusError(resp))
	}
	return nil
}

// ResetToken rotates the runner token with the current one: POST /runners/reset_authentication_token.
// The old token stops working at once.
func (c *Client) ResetToken(ctx context.Context, token string) (TokenResponse, error) {
	b, err := jsonBody(struct {
		Token string `json:"token"`
	}{token})
	if err != nil {
		return TokenResponse{}, err
	}
	return c.resetToken(ctx, call{method: http.MethodPost, path: "runners/reset_authentication_token", body: b,
		contentType: "application/json", acceptJSON: true, header: runnerHeader(token)})
}

// ResetTokenWithPAT rotates a runner's token with a personal access token:
// POST /runners/:id/reset_authentication_token.
func (c *Client) ResetTokenWithPAT(ctx context.Context, runnerID int64, pat string) (TokenResponse, error) {
	return c.resetToken(ctx, call{method: http.MethodPost, path: "runners/" + strconv.FormatInt(runnerID, 10) + "/reset_authentication_token",
		acceptJSON: true, header: http.Header{"Private-Token": {pat}}})
}

func (c *Client) resetToken(ctx context.Context, cl call) (TokenResponse, error) {
	resp, err := c.do(ctx, cl)
	if err != nil {
		return TokenResponse{}, fmt.Errorf("resetting runner token: %w", err)
	}
	var t tokenJSON
	if err := decodeJSON(resp, http.StatusCreated, &t); err != nil {
		return TokenResponse{}, fmt.Errorf("resetting runner token: %w", err)
	}
	return t.response(), nil
}
