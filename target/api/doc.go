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
//
// Errors are {"error": ..., "object": ..., "reason": ...} with 400 (invalid
// input, malformed JSON), 401 (TCP without the token), 404 (unknown object),
// 405, 409 (exists, mapped, in a pair, wrong state, split deferred) or 500.
//
// Target changes are persisted in the meta volume in one transaction, then
// applied live with target.Server.Apply and the whole target list built by
// BuildTargets; if Apply fails the change is rolled back. The API serializes
// target changes; LUN and migration work is delegated to package lm.
//
// It must never touch data volumes or gotgt directly, and never return a
// CHAP secret.
package api
