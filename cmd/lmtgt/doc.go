// Command lmtgt is the lmtgt daemon (`lmtgt serve`) and its command line
// client (every other subcommand talks to the admin API of a running
// daemon; see docs/cli.md).
//
// This package only parses flags, wires the parts together and decides
// exit codes: 0 success, 1 a failed operation (the server refused or could
// not be reached), 2 a usage error. No other package may exit the process.
package main
