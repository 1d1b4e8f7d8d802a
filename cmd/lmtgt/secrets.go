package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// Secrets (CHAP secrets, admin tokens) can be given three ways:
//
//	--NAME VALUE     in argv: visible to every user in ps(1), kept for
//	                 compatibility;
//	--NAME -         one line read from standard input;
//	--NAME-file F    the contents of file F (one trailing newline dropped).
//
// The file and stdin forms never show in the process list (docs/cli.md).

// maxSecretLen bounds what a secret file or stdin may hold.
const maxSecretLen = 4 << 10

// secretReader reads the secrets of one command line; stdin is read at
// most once.
type secretReader struct {
	c         *cli.Context
	stdinUsed string // the flag that read stdin
}

// get returns the secret of flag name (and name-file), "" when neither is
// given. Both given is a usage error.
func (r *secretReader) get(name string) (string, error) {
	fileFlag := name + "-file"
	v, f := r.c.String(name), r.c.String(fileFlag)
	switch {
	case v != "" && f != "":
		return "", usageErr("--%s and --%s: give one", name, fileFlag)
	case f != "":
		return readSecretFile(fileFlag, f)
	case v == "-":
		if r.stdinUsed != "" {
			return "", usageErr("--%s -: standard input already gives --%s", name, r.stdinUsed)
		}
		r.stdinUsed = name
		in := r.c.App.Reader
		if in == nil {
			in = os.Stdin
		}
		return readSecretLine("--"+name+" -", in)
	}
	return v, nil
}

func readSecretFile(flag, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", usageErr("--%s: %v", flag, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretLen+1))
	if err != nil {
		return "", usageErr("--%s %s: %v", flag, path, err)
	}
	if len(b) > maxSecretLen {
		return "", usageErr("--%s %s: longer than %d bytes", flag, path, maxSecretLen)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" || strings.ContainsAny(s, "\r\n\x00") {
		return "", usageErr("--%s %s: want one non-empty line", flag, path)
	}
	return s, nil
}

func readSecretLine(what string, in io.Reader) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(in, maxSecretLen+1), 512)
	line, err := br.ReadString('\n')
	if err != nil && err != io.EOF {
		return "", usageErr("%s: reading standard input: %v", what, err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if s == "" || len(s) > maxSecretLen || strings.ContainsAny(s, "\r\x00") {
		return "", usageErr("%s: want one non-empty line on standard input", what)
	}
	return s, nil
}

// adminToken is the admin API token of this command line (--admin-token,
// --admin-token - or --admin-token-file).
func adminToken(c *cli.Context) (string, error) {
	r := &secretReader{c: c}
	tok, err := r.get("admin-token")
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}
