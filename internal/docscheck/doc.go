// Package docscheck holds the tests that keep the docs in step with the code: every config key that
// config.toml.example shows, that common/config decodes, or that a compiled-in plugin reads from
// plugin_config is documented in docs/configuration.md; the log lines, metrics, alerts and files that
// docs/operations.md quotes exist; and the config the README gives for the standalone simulator loads.
package docscheck
