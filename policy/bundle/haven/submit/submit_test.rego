package haven.submit

import data.haven.lib

base_input := {
	"now": lib.fixture_now,
	"requester": {"id": "analyst-17", "org": "QWE", "roles": ["analyst"]},
	"definition": {"id": "t2dm-emergency-admissions", "hash": lib.fixture_hash, "codelists": ["t2dm"]},
	"parameters": lib.fixture_parameters,
	"purpose": "commissioning",
	"counts": {"runs_last_24h": 3, "refused_last_24h": 0, "active_runs": 1, "org_active_runs": 2},
	"ledger": {"since": "2025-01-01T00:00:00Z", "near": [], "runs": {"requester": 0, "organisation": 0}},
}

# eval runs the decision on base_input patched with patch.
eval(patch) := d if {
	inp := object.union(base_input, patch)
	d := decision with input as inp with data.approvals as lib.fixture_approvals
	quick_path_sound(inp, lib.fixture_approvals)
}

# eval_without runs the decision on base_input without the given keys.
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

denied_for(d, want) if {
	d.allow == false
	lib.codes(d) == want
}

test_allow if {
	d := eval({})
	d.allow == true
	d.reasons == []
}

test_allow_at_range_bounds if {
	eval({"parameters": {"index_date": "2025-12-31", "followup_days": 30, "sex": "M"}}).allow
	eval({"parameters": {"index_date": "2018-01-01", "followup_days": 730}}).allow
}

test_allow_second_role_and_purpose if {
	eval({"requester": {"roles": ["researcher", "commissioner"]}, "purpose": "service_evaluation"}).allow
}

test_allow_without_rate_limit_or_counts if {
	d := decision with input as json.remove(base_input, ["counts"])
		with data.approvals as lib.fixture_approvals
		with data.rate_limits as {}
	d.allow
}

test_deny_bad_now if {
	denied_for(eval({"now": "2026-03-01"}), {"invalid_input"})
	denied_for(eval_without(["now"]), {"invalid_input"})
}

test_deny_unnamed_requester if {
	denied_for(eval({"requester": {"id": ""}}), {"invalid_input"})
	denied_for(eval_without(["requester/org"]), {"invalid_input"})
}

test_deny_unapproved_definition if {
	denied_for(eval({"definition": {"id": "everything-about-everyone"}}), {"definition_not_approved"})
	denied_for(eval_without(["definition"]), {"definition_not_approved"})
}

test_deny_hash_mismatch if {
	denied_for(eval({"definition": {"hash": "2222222222222222222222222222222222222222222222222222222222222222"}}), {"definition_hash_mismatch"})
	denied_for(eval_without(["definition/hash"]), {"definition_hash_mismatch"})
}

test_deny_approval_without_hash if {
	approvals := json.remove(lib.fixture_approvals, ["t2dm-emergency-admissions/hash"])
	d := decision with input as object.union(base_input, {"definition": {"hash": ""}})
		with data.approvals as approvals
	denied_for(d, {"definition_hash_mismatch"})
}

test_deny_empty_or_odd_hashes if {
	blank := json.patch(lib.fixture_approvals, [{"op": "replace", "path": "/t2dm-emergency-admissions/hash", "value": ""}])
	d := decision with input as object.union(base_input, {"definition": {"hash": ""}}) with data.approvals as blank
	denied_for(d, {"definition_hash_mismatch"})
	quick_path_sound(object.union(base_input, {"definition": {"hash": ""}}), blank)
	numeric := json.patch(lib.fixture_approvals, [{"op": "replace", "path": "/t2dm-emergency-admissions/hash", "value": 7}])
	d2 := decision with input as object.union(base_input, {"definition": {"hash": 7}}) with data.approvals as numeric
	denied_for(d2, {"definition_hash_mismatch"})
	quick_path_sound(object.union(base_input, {"definition": {"hash": 7}}), numeric)
}

test_deny_expired if {
	denied_for(eval({"now": "2026-11-14T00:00:00Z"}), {"approval_expired"})
	denied_for(eval({"now": "2027-01-01T00:00:00Z"}), {"approval_expired"})
}

test_deny_malformed_expiry if {
	approvals := json.patch(lib.fixture_approvals, [{"op": "replace", "path": "/t2dm-emergency-admissions/expires", "value": "2026-11-14"}])
	d := decision with input as base_input with data.approvals as approvals
	denied_for(d, {"approval_expired"})
}

test_deny_role if {
	denied_for(eval({"requester": {"roles": ["researcher"]}}), {"role_not_permitted"})
	denied_for(eval({"requester": {"roles": []}}), {"role_not_permitted"})
	denied_for(eval({"requester": {"roles": "analyst"}}), {"role_not_permitted"})
	denied_for(eval_without(["requester/roles"]), {"role_not_permitted"})
}

test_deny_purpose if {
	# research is neither in the approval nor a purpose an analyst states.
	denied_for(eval({"purpose": "research"}), {"purpose_not_permitted", "purpose_not_permitted_for_role"})
	denied_for(eval({"purpose": "clinical_audit"}), {"purpose_not_permitted"})
	denied_for(eval_without(["purpose"]), {"purpose_not_permitted"})
}

test_deny_parameters if {
	denied_for(eval({"parameters": {"followup_days": 29}}), {"parameter_below_min"})
	denied_for(eval({"parameters": {"followup_days": 731}}), {"parameter_above_max"})
	denied_for(eval({"parameters": {"index_date": "2017-12-31"}}), {"parameter_below_min"})
	denied_for(eval({"parameters": {"index_date": "2026-01-01"}}), {"parameter_above_max"})
	denied_for(eval({"parameters": {"followup_days": "365"}}), {"parameter_invalid"})
	denied_for(eval({"parameters": {"sex": "U"}}), {"parameter_not_allowed"})
	denied_for(eval({"parameters": {"postcode": "LS1"}}), {"parameter_not_approved"})
	denied_for(eval({"parameters": 365}), {"invalid_input"})
	denied_for(eval({"parameters": []}), {"invalid_input"})
}

test_deny_parameter_messages_do_not_echo_values if {
	d := eval({"parameters": {"followup_days": 9999}})
	some r in d.reasons
	not contains(r.message, "9999")
}

test_deny_restricted_codelist if {
	d := eval({"definition": {"codelists": ["t2dm", "sexual-health"]}})
	denied_for(d, {"restricted_codelist"})
	contains(d.reasons[0].message, "sexual-health")
	denied_for(eval({"definition": {"codelists": "t2dm"}}), {"invalid_input"})
	denied_for(eval({"definition": {"codelists": {"t2dm": true}}}), {"invalid_input"})
}

test_deny_rate if {
	denied_for(eval({"counts": {"runs_last_24h": 50}}), {"rate_limit_exceeded"})
	eval({"counts": {"runs_last_24h": 49}}).allow
	denied_for(eval_without(["counts"]), {"rate_limit_unknown"})
	denied_for(eval({"counts": {"runs_last_24h": "3"}}), {"rate_limit_unknown"})
}

test_every_failure_is_reported_in_order if {
	d := eval({"purpose": "research", "requester": {"roles": ["researcher"]}, "parameters": {"followup_days": 1}})
	denied_for(d, {"purpose_not_permitted", "role_not_permitted", "parameter_below_min"})
	d.reasons == sort(d.reasons)
}

test_deny_unknown_purpose if {
	denied_for(eval({"purpose": "marketing"}), {"purpose_unknown", "purpose_not_permitted"})
}

# An approval a researcher may run for research.
researcher_approvals := json.patch(lib.fixture_approvals, [
	{"op": "add", "path": "/t2dm-emergency-admissions/roles/-", "value": "researcher"},
	{"op": "add", "path": "/t2dm-emergency-admissions/purposes/-", "value": "research"},
])

test_deny_purpose_not_for_role if {
	# The approval lists commissioning, but a researcher may not state it.
	inp := object.union(base_input, {"requester": {"roles": ["researcher"]}})
	d := decision with input as inp with data.approvals as researcher_approvals
	denied_for(d, {"purpose_not_permitted_for_role"})
	quick_path_sound(inp, researcher_approvals)
	inp2 := object.union(base_input, {"requester": {"roles": ["researcher"]}, "purpose": "research"})
	d2 := decision with input as inp2 with data.approvals as researcher_approvals
	d2.allow
	quick_path_sound(inp2, researcher_approvals)
}

test_deny_refused_limit if {
	denied_for(eval({"counts": {"refused_last_24h": 200}}), {"refused_limit_exceeded"})
	eval({"counts": {"refused_last_24h": 199}}).allow
	denied_for(eval({"counts": {"refused_last_24h": "0"}}), {"rate_limit_unknown"})
	d := decision with input as json.remove(base_input, ["counts/refused_last_24h"])
		with data.approvals as lib.fixture_approvals
	denied_for(d, {"rate_limit_unknown"})
}

test_deny_refused_message_does_not_echo_input if {
	d := eval({"counts": {"refused_last_24h": 12345}})
	some r in d.reasons
	not contains(r.message, "12345")
}

test_deny_off_grid_naming_nearest_allowed if {
	approvals := json.patch(lib.fixture_approvals, [{"op": "add", "path": "/t2dm-emergency-admissions/parameters/index_date/step", "value": "month_start"}])
	inp := object.union(base_input, {"parameters": {"index_date": "2025-06-02"}})
	d := decision with input as inp with data.approvals as approvals
	denied_for(d, {"parameter_off_grid"})
	d.reasons[0].message == "index_date 2025-06-02 is not a month start; nearest allowed: 2025-06-01, 2025-07-01"
	quick_path_sound(inp, approvals)
	ok := object.union(base_input, {"parameters": {"index_date": "2025-06-01"}})
	allowed with input as ok with data.approvals as approvals
	quick_path_sound(ok, approvals)
}

# The release ledger's rules, with the reference bundle's settings.
ledger_rules := {
	"near_duplicate": {"window_days": 30, "date_days": 27, "number_distance": 0},
	"budget": {"period_days": 30, "per_requester": 2, "per_organisation": 3},
}

# entry is a run in the ledger, days before fixture_now.
entry(id, who, org, params, days_ago, released) := {
	"run_id": id,
	"requester": {"id": who, "org": org},
	"parameters": params,
	"submitted_at": time.format([time.parse_rfc3339_ns(lib.fixture_now) - ((days_ago * 86400) * 1e9), "UTC", "2006-01-02T15:04:05Z07:00"]),
	"released": released,
}

# eval_ledger runs the decision with a ledger summary: the near runs and
# the counts in the budget period, as the engine reads them (which runs
# are near is tested in Go, policy/ledger_test.go).
eval_ledger(near, mine, org, rules) := d if {
	inp := object.union(base_input, {"ledger": {"since": "2025-01-01T00:00:00Z", "near": near, "runs": {"requester": mine, "organisation": org}}})
	d := decision with input as inp with data.approvals as lib.fixture_approvals with data.ledger as rules
	quick_path_sound_ledger(inp, rules)
}

quick_path_sound_ledger(inp, rules) if {
	not allowed with input as inp with data.approvals as lib.fixture_approvals with data.ledger as rules
}

quick_path_sound_ledger(inp, rules) if {
	allowed with input as inp with data.approvals as lib.fixture_approvals with data.ledger as rules
	count(reasons) == 0 with input as inp with data.approvals as lib.fixture_approvals with data.ledger as rules
}

test_ledger_allows_a_fresh_question if {
	eval_ledger([], 0, 0, ledger_rules).allow
	eval_ledger([], 1, 2, ledger_rules).allow
}

test_ledger_refuses_a_near_duplicate_naming_the_run if {
	d := eval_ledger([entry("run-EARLIER", "analyst-9", "XYZ", lib.fixture_parameters, 2, true)], 0, 0, ledger_rules)
	denied_for(d, {"near_duplicate"})
	contains(d.reasons[0].message, "run run-EARLIER (released, submitted 2026-02-27)")
	contains(d.reasons[0].message, "dates within 27 days, numbers within 0")
	contains(d.reasons[0].message, "for 30 days after it")
	d2 := eval_ledger([entry("run-B", "analyst-9", "XYZ", {"index_date": "2024-04-20", "followup_days": 365}, 0, false)], 0, 0, ledger_rules)
	denied_for(d2, {"near_duplicate"})
	contains(d2.reasons[0].message, "run run-B (still running")
	two := eval_ledger([entry("run-B", "a", "XYZ", lib.fixture_parameters, 0, true), entry("run-C", "b", "XYZ", lib.fixture_parameters, 1, true)], 0, 0, ledger_rules)
	count(two.reasons) == 2
}

test_ledger_budget_per_requester_and_organisation if {
	d := eval_ledger([], 2, 2, ledger_rules)
	denied_for(d, {"budget_exceeded"})
	contains(d.reasons[0].message, "the requester has had 2 runs")
	eval_ledger([], 1, 2, ledger_rules).allow
	d2 := eval_ledger([], 1, 3, ledger_rules)
	denied_for(d2, {"budget_exceeded"})
	contains(d2.reasons[0].message, "organisation has had 3 runs")
}

test_ledger_missing_or_malformed_fails_closed if {
	none := decision with input as json.remove(base_input, ["ledger"]) with data.approvals as lib.fixture_approvals with data.ledger as ledger_rules
	denied_for(none, {"ledger_unknown"})
	bad_entry := object.union(entry("run-1", "a", "QWE", {}, 1, true), {"submitted_at": "yesterday"})
	denied_for(eval_ledger([bad_entry], 0, 0, ledger_rules), {"ledger_unknown"})
	denied_for(eval_ledger([], "2", 0, ledger_rules), {"ledger_unknown"})
	no_runs := json.remove(base_input, ["ledger/runs"])
	d_no_runs := decision with input as no_runs with data.approvals as lib.fixture_approvals with data.ledger as ledger_rules
	denied_for(d_no_runs, {"ledger_unknown"})
	old_shape := json.patch(base_input, [{"op": "replace", "path": "/ledger", "value": {"since": "2025-01-01T00:00:00Z", "entries": []}}])
	d_old := decision with input as old_shape with data.approvals as lib.fixture_approvals with data.ledger as ledger_rules
	denied_for(d_old, {"ledger_unknown"})
	late := object.union(base_input, {"ledger": {"since": "2026-02-15T00:00:00Z", "near": [], "runs": {"requester": 0, "organisation": 0}}})
	d := decision with input as late with data.approvals as lib.fixture_approvals with data.ledger as ledger_rules
	denied_for(d, {"ledger_incomplete"})
	quick_path_sound_ledger(late, ledger_rules)
}

test_ledger_without_rules_needs_no_ledger if {
	d := decision with input as json.remove(base_input, ["ledger"]) with data.approvals as lib.fixture_approvals with data.ledger as {}
	d.allow
}

test_ledger_rules_malformed_fail_closed if {
	denied_for(eval_ledger([], 0, 0, {"near_duplicate": {"window_days": "30"}}), {"ledger_rules_invalid"})
	denied_for(eval_ledger([], 0, 0, {"budget": {"period_days": 30}}), {"ledger_rules_invalid"})
}

test_ledger_with_bad_now if {
	inp := object.union(base_input, {"now": "soon", "ledger": {"since": "2025-01-01T00:00:00Z", "near": [entry("run-1", "analyst-17", "QWE", lib.fixture_parameters, 1, true)], "runs": {"requester": 1, "organisation": 1}}})
	d := decision with input as inp with data.approvals as lib.fixture_approvals with data.ledger as ledger_rules
	denied_for(d, {"invalid_input"})
}

test_deny_active_limits if {
	denied_for(eval({"counts": {"active_runs": 8}}), {"too_many_active_runs"})
	eval({"counts": {"active_runs": 7}}).allow
	denied_for(eval({"counts": {"org_active_runs": 20}}), {"org_too_many_active_runs"})
	eval({"counts": {"org_active_runs": 19}}).allow
	denied_for(eval_without(["counts/active_runs"]), {"rate_limit_unknown"})
	denied_for(eval_without(["counts/org_active_runs"]), {"rate_limit_unknown"})
}
