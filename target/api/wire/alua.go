package wire

// ALUA is GET /v1/alua[?lun=NAME]: the target port groups of this server,
// its targets (one target port each) and, per LUN, its access state in
// each group that holds it or where a state was set.
type ALUA struct {
	Groups  []ALUAGroup  `json:"groups"`
	Targets []ALUATarget `json:"targets"`
	LUNs    []ALUALUN    `json:"luns"`
}

// ALUATarget is one target's target port: its group and its relative
// target port identifier. It is also the answer of
// PUT /v1/alua/targets/{iqn}.
type ALUATarget struct {
	IQN   string `json:"iqn"`
	Group uint16 `json:"group"`
	Port  uint16 `json:"port"`
}

// ALUAGroup is a target port group with its targets.
type ALUAGroup struct {
	ID      uint16       `json:"id"`
	Targets []ALUATarget `json:"targets"`
}

// ALUALUN is a LUN's access states; it is also the answer of
// PUT /v1/alua/luns/{name}/groups/{id}.
type ALUALUN struct {
	Name   string         `json:"name"`
	ID     string         `json:"id"`
	Groups []ALUALUNGroup `json:"groups"`
}

// ALUALUNGroup is a LUN's state in one group. Ports are the relative
// target port IDs of the group's targets that map the LUN (what REPORT
// TARGET PORT GROUPS lists; empty: no target of the group maps it yet).
// Set is true when the state was set (not the default).
type ALUALUNGroup struct {
	Group uint16   `json:"group"`
	State string   `json:"state"`
	Ports []uint16 `json:"ports"`
	Set   bool     `json:"set"`
}

// SetALUATarget is the body of PUT /v1/alua/targets/{iqn}: the group
// and/or the relative target port ID (1..65535) to give the target.
type SetALUATarget struct {
	Group *int `json:"group,omitempty"`
	Port  *int `json:"port,omitempty"`
}

// SetALUAState is the body of PUT /v1/alua/luns/{name}/groups/{id}:
// active-optimized, active-nonoptimized, standby, unavailable or
// transitioning.
type SetALUAState struct {
	State string `json:"state"`
}
