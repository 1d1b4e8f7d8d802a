// Package client is the Go client of lmtgt's admin API, used by the CLI and
// the integration tests. It speaks HTTP+JSON to a unix socket (an address
// that is a file path) or to a TCP listener ("http://host:port" or
// "host:port", with a bearer token), and turns error responses into
// *wire.Error values.
//
// It also holds the size syntax shared by every command (ParseSize,
// FormatSize). It must never import the server side (lm, metavol, target).
package client
