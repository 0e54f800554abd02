package haven.site

base := {
	"now": "2026-03-01T09:00:00Z",
	"task": {"purpose": "commissioning"},
	"site": {"ods": "A81001", "kind": "gp", "paused": false},
}

codes(patch) := {d.code |
	some d in deny with input as object.union(base, patch)
}

test_commissioning_accepted if {
	codes({}) == set()
}

test_research_refused if {
	codes({"task": {"purpose": "research"}}) == {"site_purpose_refused"}
}

test_maintenance_window if {
	codes({"now": "2026-01-11T02:00:00Z"}) == {"site_maintenance"}
	codes({"now": "2026-01-11T06:00:00Z"}) == set()
	codes({"now": "2026-01-10T17:59:59Z"}) == set()
}

test_paused if {
	codes({"site": {"paused": true}}) == {"site_paused"}
}

test_unknown_pause_state_counts_as_paused if {
	got := {d.code | some d in deny with input as json.remove(base, ["site/paused"])}
	got == {"site_paused"}
}
