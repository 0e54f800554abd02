package haven.participate

import data.haven.lib

base_input := {
	"now": lib.fixture_now,
	"task": {
		"definition": {"id": "t2dm-emergency-admissions", "hash": lib.fixture_hash},
		"purpose": "commissioning",
		"mode": "aggregate",
		"requester_org": "QWE",
		"codelists": ["t2dm"],
		"parameters": lib.fixture_parameters,
	},
	"site": {"ods": "A81001", "kind": "gp", "paused": false, "bundle_revision": "2026.1"},
}

eval(patch) := d if {
	inp := object.union(base_input, patch)
	d := decision with input as inp with data.approvals as lib.fixture_approvals
	quick_path_sound(inp, lib.fixture_approvals)
}

eval_without(paths) := d if {
	inp := json.remove(base_input, paths)
	d := decision with input as inp with data.approvals as lib.fixture_approvals
	quick_path_sound(inp, lib.fixture_approvals)
}

# quick_path_sound holds when `allowed` does not clear an input that some
# rule denies. Every eval above checks it, so every test input does.
quick_path_sound(inp, approvals) if {
	not allowed with input as inp with data.approvals as approvals
}

quick_path_sound(inp, approvals) if {
	allowed with input as inp with data.approvals as approvals
	count(reasons) == 0 with input as inp with data.approvals as approvals
}

test_quick_path_clears_usual_input if {
	allowed with input as base_input with data.approvals as lib.fixture_approvals
}

# eval_site runs the decision with a site module's deny set in place.
eval_site(patch, deny) := d if {
	inp := object.union(base_input, patch)
	d := decision with input as inp
		with data.approvals as lib.fixture_approvals
		with data.haven.site.deny as deny
	quick_path_sound_with_site(inp, deny)
}

quick_path_sound_with_site(inp, deny) if {
	not allowed with input as inp with data.approvals as lib.fixture_approvals with data.haven.site.deny as deny
}

quick_path_sound_with_site(inp, deny) if {
	allowed with input as inp with data.approvals as lib.fixture_approvals with data.haven.site.deny as deny
	count(reasons) == 0 with input as inp with data.approvals as lib.fixture_approvals with data.haven.site.deny as deny
}

denied_for(d, want) if {
	d.allow == false
	lib.codes(d) == want
}

test_allow_gp_aggregate if {
	d := eval({})
	d.allow
	d.reasons == []
}

test_allow_gp_and_trust_linkage if {
	eval({"task": {"mode": "linkage"}}).allow
	eval({"task": {"mode": "linkage"}, "site": {"kind": "trust", "ods": "RR8"}}).allow
}

test_allow_with_empty_site_deny if {
	eval_site({}, set()).allow
}

test_deny_bad_now if {
	denied_for(eval({"now": "soon"}), {"invalid_input"})
	denied_for(eval_without(["now"]), {"invalid_input"})
}

test_deny_not_in_bundle if {
	denied_for(eval({"task": {"definition": {"id": "all-patients-everywhere"}}}), {"definition_not_in_bundle"})
	denied_for(eval_without(["task/definition"]), {"definition_not_in_bundle"})
	denied_for(eval_without(["task"]), {"definition_not_in_bundle", "mode_not_allowed"})
}

test_deny_hash_mismatch if {
	denied_for(eval({"task": {"definition": {"hash": "0000000000000000000000000000000000000000000000000000000000000000"}}}), {"definition_hash_mismatch"})
	denied_for(eval_without(["task/definition/hash"]), {"definition_hash_mismatch"})
}

test_deny_empty_or_odd_hashes if {
	blank := json.patch(lib.fixture_approvals, [{"op": "replace", "path": "/t2dm-emergency-admissions/hash", "value": ""}])
	inp := object.union(base_input, {"task": {"definition": {"hash": ""}}})
	d := decision with input as inp with data.approvals as blank
	denied_for(d, {"definition_hash_mismatch"})
	not allowed with input as inp with data.approvals as blank
	numeric := json.patch(lib.fixture_approvals, [{"op": "replace", "path": "/t2dm-emergency-admissions/hash", "value": 7}])
	inp2 := object.union(base_input, {"task": {"definition": {"hash": 7}}})
	d2 := decision with input as inp2 with data.approvals as numeric
	denied_for(d2, {"definition_hash_mismatch"})
	not allowed with input as inp2 with data.approvals as numeric
}

test_deny_expired if {
	denied_for(eval({"now": "2026-11-14T00:00:00Z"}), {"approval_expired"})
}

test_deny_purpose if {
	denied_for(eval({"task": {"purpose": "research"}}), {"purpose_not_permitted"})
	denied_for(eval_without(["task/purpose"]), {"purpose_not_permitted"})
}

test_deny_parameters if {
	denied_for(eval({"task": {"parameters": {"followup_days": 3650}}}), {"parameter_above_max"})
	denied_for(eval({"task": {"parameters": {"extract_all": true}}}), {"parameter_not_approved"})
	denied_for(eval({"task": {"parameters": []}}), {"invalid_input"})
}

test_deny_restricted_codelists if {
	d := eval({"task": {"codelists": ["t2dm", "ivf", "gender-identity"]}})
	denied_for(d, {"restricted_codelist"})
	count(d.reasons) == 2
	denied_for(eval({"task": {"codelists": {"t2dm": true}}}), {"invalid_input"})
}

test_deny_paused if {
	denied_for(eval({"site": {"paused": true}}), {"site_paused"})
	denied_for(eval({"site": {"paused": "no"}}), {"site_paused"})
	denied_for(eval_without(["site/paused"]), {"site_paused"})
}

test_deny_mode_for_site_kind if {
	denied_for(eval({"site": {"kind": "trust"}}), {"mode_not_allowed"})
	denied_for(eval({"task": {"mode": "extract"}}), {"mode_not_allowed"})
	denied_for(eval({"site": {"kind": "pharmacy"}}), {"mode_not_allowed"})
	denied_for(eval_without(["site"]), {"mode_not_allowed", "site_paused"})
}

test_deny_by_site_reason_object if {
	d := eval_site({}, {{"code": "site_purpose_refused", "message": "this practice does not take part in commissioning queries"}})
	denied_for(d, {"site_purpose_refused"})
	d.reasons[0].source == "site"
}

test_deny_by_site_reason_string if {
	d := eval_site({}, {"closed for migration"})
	denied_for(d, {"site_denied"})
	d.reasons[0].message == "closed for migration"
}

test_site_cannot_widen if {
	# A site deny set cannot lift a bundle denial, even when empty.
	denied_for(eval_site({"site": {"paused": true}}, set()), {"site_paused"})
}

test_deny_malformed_site_policy if {
	denied_for(eval_site({}, {42}), {"site_policy_invalid"})
	denied_for(eval_site({}, ["not", "a", "set"]), {"site_policy_invalid", "site_denied"})
	denied_for(eval_site({}, "refuse"), {"site_policy_invalid"})
}

test_reasons_sorted if {
	d := eval({"site": {"paused": true, "kind": "trust"}, "task": {"purpose": "research"}})
	denied_for(d, {"site_paused", "mode_not_allowed", "purpose_not_permitted"})
	d.reasons == sort(d.reasons)
}
