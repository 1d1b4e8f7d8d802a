// Package api is lmtgt's admin API: HTTP+JSON under /v1 on a unix socket
// (mode 0600) and, optionally, on a TCP listener that requires
// "Authorization: Bearer TOKEN". Every `lmtgt` subcommand except `serve` is a
// client of it (package target/api/client; wire types in target/api/wire).
//
// Routes (bodies and responses in package wire):
//
//	GET    /v1/health
//	POST   /v1/luns                               create a LUN
//	GET    /v1/luns                               list LUNs
//	GET    /v1/luns/{name}                        show a LUN
//	POST   /v1/luns/{name}/resize (or PATCH)      grow a LUN
//	DELETE /v1/luns/{name}                        delete a LUN
//	POST   /v1/targets                            create a target
//	GET    /v1/targets, /v1/targets/{iqn}         list, show
//	DELETE /v1/targets/{iqn}[?force=true]         delete a target
//	POST   /v1/targets/{iqn}/luns                 map a LUN (lowest free number by default)
//	DELETE /v1/targets/{iqn}/luns/{name}          unmap a LUN
//	POST   /v1/targets/{iqn}/initiators           allow an initiator or ALL
//	DELETE /v1/targets/{iqn}/initiators/{name}    remove an initiator or ALL
//	PUT    /v1/targets/{iqn}/chap                 set CHAP (one-way or mutual)
//	DELETE /v1/targets/{iqn}/chap                 turn CHAP off
//	GET    /v1/discovery                          how discovery sessions authenticate
//	PUT    /v1/discovery/chap                     require CHAP on discovery sessions
//	DELETE /v1/discovery/chap                     discovery without authentication (default)
//	POST   /v1/migrations                         create a pair
//	GET    /v1/migrations, /v1/migrations/{src}   list, show
//	POST   /v1/migrations/{src}/pause|resume|cancel
//	PATCH  /v1/migrations/{src}                   change speed / cap
//	POST   /v1/migrations/split                   split one or several pairs
//	POST   /v1/sessions                           create a migration session (all its pairs)
//	GET    /v1/sessions, /v1/sessions/{name}      list, show (aggregated state, a row per pair)
//	POST   /v1/sessions/{name}/pause|resume|cancel
//	PATCH  /v1/sessions/{name} (or POST .../set)  change speed / cap of every pair
//	POST   /v1/sessions/{name}/split              one consistent split of all its pairs
//	DELETE /v1/sessions/{name}                    forget a split or cancelled session
//	GET    /v1/alua[?lun=NAME]                    ALUA groups, target ports, LUN access states
//	PUT    /v1/alua/targets/{iqn}                 set a target's port group and/or relative port ID
//	PUT    /v1/alua/luns/{name}/groups/{id}       set a LUN's access state in a port group
//	GET    /v1/config[?secrets=true]              the whole configuration (config.go)
//	POST   /v1/config/apply                       plan (dry_run) or apply a configuration, live
//	GET    /v1/config/backups                     the automatic backups (DATA_DIR/config-backups)
//
// Errors are {"error": ..., "object": ..., "reason": ...} with 400 (invalid
// input, malformed JSON), 401 (TCP without the token), 404 (unknown object),
// 405, 409 (exists, mapped, in a pair, wrong state, split deferred) or 500.
//
// The API only translates: it decodes a request, calls one operation of
// package lm (*lm.Manager), converts lm's result to its wire type (one
// conversion per object, convert.go) and maps errors to status codes
// (errors.go: lm.Refusal keeps its object and reason; the sentinel it
// wraps picks the code). Every rule (names, sizes, block sizes, LUN
// numbers, "a pair's target LUN is never mapped", CHAP limits, pause
// budgets ...), every lock and every meta volume transaction is lm's. Target
// changes are persisted by lm in one transaction under its admin lock and
// then applied live through lm's Exporter hook, which NewService sets to
// an adapter that builds the whole target list (BuildTargets) and calls
// target.Server.Apply; if Apply fails, lm rolls the change back. Files:
// service.go (Service, the Exporter adapter, LUNs), targets.go,
// migrations.go, sessions.go, alua.go (ALUA routes; the ID and state
// checks are package target's functions, called here where the request
// is decoded), convert.go, errors.go, server.go (routes).
//
// It must never touch data volumes, the meta volume or gotgt directly,
// hold a lock of its own around lm calls, or return a CHAP secret.
package api
