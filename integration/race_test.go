//go:build race

package integration

// raceBuild: the test binary runs under the race detector, so the daemon
// is built with it too.
const raceBuild = true
