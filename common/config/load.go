// Package config reads, validates and writes config.toml with upstream gitlab-runner's key names, types
// and defaults, so that a file written for upstream's docker-autoscaler loads unchanged.
//
// Load reports every problem at once, each named by its key path; keys and executors fleetrunner does
// not run come back as warnings. Defaults live in accessor methods (GetCheckInterval, …) so that the
// structs keep what the user wrote and Save writes it back.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads, checks and validates the config file at path. On success the warnings name what
// fleetrunner ignores. On failure the error is a *FileError naming the file and every problem found;
// a missing file is reported with an error that matches fs.ErrNotExist.
func Load(path string) (*Config, []Warning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("config file %s does not exist (register a runner first, or pass -c/--config): %w", path, err)
		}
		return nil, nil, fmt.Errorf("config file %s cannot be read (pass a readable file with -c/--config): %w", path, err)
	}
	cfg, warns, err := Parse(data)
	for i := range warns {
		warns[i].File = path
	}
	if err != nil {
		return nil, warns, &FileError{File: path, Errs: Problems(err)}
	}
	return cfg, warns, nil
}

// Parse decodes and validates config.toml content. Errors are joined *FieldError values (or one
// *SyntaxError); warnings carry no file name.
func Parse(data []byte) (*Config, []Warning, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, nil, syntaxError(err, data)
	}
	// The decoder matches keys case-insensitively, so "Concurrent = 5" sets concurrent too.
	hasConcurrent := slices.ContainsFunc(slices.Collect(maps.Keys(raw)), func(k string) bool { return strings.EqualFold(k, "concurrent") })

	check := &schemaCheck{}
	check.table(keyPath{}, raw, reflect.TypeFor[Config]())

	// A clean file is decoded as written; one with bad values is decoded without them, so that
	// validation can still report every other problem.
	src := data
	if len(check.errs) > 0 {
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(raw); err != nil {
			return nil, nil, errors.Join(append(check.errs, fmt.Errorf("re-encoding the valid part: %w", err))...)
		}
		src = buf.Bytes()
	}
	cfg := &Config{}
	if _, err := toml.Decode(string(src), cfg); err != nil {
		return nil, nil, errors.Join(append(check.errs, syntaxError(err, src))...)
	}
	if !hasConcurrent {
		// Upstream's NewConfig starts from concurrent = 1.
		cfg.Concurrent = DefaultConcurrent
	}

	errs := check.errs
	for _, err := range cfg.problems() {
		var fe *FieldError
		if errors.As(err, &fe) && check.bad[fe.Key] {
			continue
		}
		errs = append(errs, err)
	}
	warns := append(check.warns, cfg.lint()...)
	if len(errs) > 0 {
		return nil, warns, errors.Join(errs...)
	}
	return cfg, warns, nil
}

// syntaxError turns the decoder's error about text into a *SyntaxError.
func syntaxError(err error, text []byte) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			msg += fmt.Sprintf(" (after key %q)", pe.LastKey)
		}
		line := pe.Position.Line
		// The decoder counts a line short when the text ends inside a string ("line 0" for a file of
		// one line); the error's byte offset is exact.
		if p := pe.Position; p.Len > 0 && p.Start >= 0 && p.Start <= len(text) {
			line = 1 + bytes.Count(text[:p.Start], []byte("\n"))
		}
		return &SyntaxError{Line: line, Message: msg, Err: err}
	}
	return err
}
