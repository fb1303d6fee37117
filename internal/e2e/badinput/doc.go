// Package badinput holds a table test of inputs an operator or a peer gets wrong: config.toml files,
// command lines of the real fleetrunner binary, job payloads from GitLab, plugin_config the plugins
// refuse, errors from AWS (awssim) and SSH failures. Each row pins the exact words the operator sees,
// which name the file, key, job or instance involved and say what to do. It has no non-test code.
package badinput
