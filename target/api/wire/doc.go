// Package wire holds the JSON request and response types of lmtgt's admin
// API (paths under /v1), shared by the server (package target/api) and its
// client (package target/api/client).
//
// It is a leaf: standard library only. It must never import the server's
// dependencies (lm, metavol, target, gotgt), so that a client can be built
// without them, and it must never carry a CHAP secret in a response type.
package wire
